package sessions

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// How the Redis backend follows a failover, and how it says whether a login can be served.
//
// Sentinel: go-redis's failover client learns the new master from the Sentinels
// (+switch-master) and reconnects; nothing to add.
//
// Cluster: go-redis re-reads the slot map after a MOVED or ASK reply, and otherwise only when
// the map is older than ClusterOptions.ClusterStateReloadInterval (60 s by default) at a
// command. A master that died answers neither: its connections are refused, so after its
// replica was promoted every command of its slots kept failing until the periodic reload.
// The cluster client NewRedis builds therefore re-reads the map every clusterMapRefresh, and
// a hook (mapRefresh) asks for a re-read whenever a command or pipeline fails in a way that
// can mean the topology moved: a network error, CLUSTERDOWN, TRYAGAIN, LOADING, READONLY,
// MASTERDOWN, MOVED or ASK. go-redis coalesces the requests (one CLUSTER SLOTS in flight, at
// most one more 200 ms after it), so a flood of failures costs a few reads a second.

// clusterMapRefresh is how often a Cluster client re-reads the slot map when no failure made
// it do so sooner.
const clusterMapRefresh = 5 * time.Second

// newRedisClient returns the client for o: go-redis's UniversalClient for a single node or
// Sentinel, and for a Cluster (several addresses, no master name) a *redis.ClusterClient
// that re-reads its slot map every clusterMapRefresh and after a failure (mapRefresh).
func newRedisClient(o *redis.UniversalOptions) redis.UniversalClient {
	if o.MasterName != "" || len(o.Addrs) < 2 {
		return redis.NewUniversalClient(o)
	}
	co := o.Cluster()
	co.ClusterStateReloadInterval = clusterMapRefresh
	c := redis.NewClusterClient(co)
	c.AddHook(mapRefresh{c: c})
	return c
}

// mapRefresh is a go-redis hook that asks its cluster client to re-read the slot map after a
// command or pipeline failed with a topologyError.
type mapRefresh struct{ c *redis.ClusterClient }

func (h mapRefresh) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h mapRefresh) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if topologyError(err) {
			h.c.ReloadState(ctx)
		}
		return err
	}
}

func (h mapRefresh) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if topologyError(err) {
			h.c.ReloadState(ctx)
		}
		return err
	}
}

// topologyError reports whether err can mean that the cluster's slot map changed: any failure
// to talk to a node (refused, reset, timed out), or a reply of a node that does not serve
// the slot now. The caller giving up (context canceled) and the server's answers about
// content (nil, WRONGTYPE, OOM) are not.
func topologyError(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, context.Canceled) {
		return false
	}
	var re redis.Error
	if !errors.As(err, &re) {
		return true
	}
	return topologyReply(err)
}

// topologyReply reports whether err, a server's reply, says that the command reached a
// server that does not serve its key now (a redirect go-redis stopped following, a cluster
// down or resharding, a server loading its data, a replica, a master without its own
// master): it was not run, and the deployment is changing.
func topologyReply(err error) bool {
	return movedOrAsk(err) || redis.IsClusterDownError(err) || redis.IsTryAgainError(err) ||
		redis.IsLoadingError(err) || redis.IsReadOnlyError(err) || redis.IsMasterDownError(err)
}

// movedOrAsk reports whether err is a MOVED or ASK redirect that go-redis gave up following
// (its redirect budget spent while the slot kept moving).
func movedOrAsk(err error) bool {
	return redis.HasErrorPrefix(err, "MOVED ") || redis.HasErrorPrefix(err, "ASK ")
}

// Readier is an optional Store capability: whether the store can serve a login right now,
// more precisely than Ping (which only shows that some server answers).
type Readier interface {
	// Ready returns nil when every part of the store that a login uses answers, else an
	// error wrapping ErrUnavailable that names the part.
	Ready(ctx context.Context) error
}

// Ready reads the connections version (every login reads it, and on Cluster it lives on
// the {conn} slot's master) and, on Cluster, pings every master that owns slots in a freshly
// read slot map: a login's records have random hash tags, so they land on every master. A
// master that died is in the map until its replica is promoted (or the cluster declares
// the slots uncovered), so Ready fails from the kill to the promotion, and succeeds as soon
// as the promoted replica answers. On a single node or Sentinel the read goes to the master
// the client uses for logins.
func (s *redisStore) Ready(ctx context.Context) error {
	if err := s.c.Get(ctx, s.connKeys().ver).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return readyErr("connections version", err)
	}
	cc, ok := s.c.(*redis.ClusterClient)
	if !ok {
		return nil
	}
	// ForEachMaster reads the slot map first (CLUSTER SLOTS on one node) and pings the
	// masters at once.
	err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		if err := m.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("master %s: %w", m.Options().Addr, err)
		}
		return nil
	})
	if err != nil {
		return readyErr("cluster masters", err)
	}
	return nil
}

// readyErr is a failed readiness read of what: ErrUnavailable whatever the cause (a reply
// that is not an outage, such as WRONGTYPE on the version key, still means no login can be
// served).
func readyErr(what string, err error) error {
	if e := mapErr("ready: "+what, err); errors.Is(e, ErrUnavailable) {
		return e
	}
	return fmt.Errorf("sessions: redis ready: %s: %w: %w", what, ErrUnavailable, err)
}

// refused reports whether err proves that the command was not run: the connection was never
// made (dial refused or timed out, no free connection in the pool) or the server refused it
// before running it (LOADING, CLUSTERDOWN, TRYAGAIN, MASTERDOWN, READONLY, NOREPLICAS, a MOVED
// or ASK go-redis stopped following, too many clients). Running such a command again cannot
// run it twice.
func refused(err error) bool {
	if err == nil {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	if errors.Is(err, redis.ErrPoolTimeout) {
		return true
	}
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	return topologyReply(err) || redis.IsNoReplicasError(err) || redis.IsMaxClientsError(err)
}

// Commands that must not run twice. go-redis runs a failed command again by itself (once on
// a single node or Sentinel, MaxRetries; up to its redirect budget on Cluster) after any
// error it deems transient, including a connection lost after the command was sent: the
// command may have run. That is harmless for reads, SET and DEL, but not for GETDEL (Take:
// the second run finds nothing, and the value is lost), SET NX (Create: the second run finds
// the record it wrote and reports ErrExists) or a compare-and-swap script (Swap: the second
// run reports ErrConflict). Those commands are sent wrapped (onceString, onceBool, onceCmd:
// NoRetry, which go-redis honours on every path) and run again by runOnce only after a
// refusal, which proves the first run did not happen.

type onceString struct{ *redis.StringCmd }

func (onceString) NoRetry() bool { return true }

type onceBool struct{ *redis.BoolCmd }

func (onceBool) NoRetry() bool { return true }

type onceCmd struct{ *redis.Cmd }

func (onceCmd) NoRetry() bool { return true }

// refusalRetryPause is how long runOnce waits before running a refused command again: time
// for a slot map re-read that the refusal asked for (mapRefresh) to land.
const refusalRetryPause = 50 * time.Millisecond

// runOnce runs do, and once more when the first run was refused (refused: it did not run)
// and ctx is not done.
func runOnce(ctx context.Context, do func() error) error {
	err := do()
	if !refused(err) {
		return err
	}
	select {
	case <-ctx.Done():
		return err
	case <-time.After(refusalRetryPause):
	}
	return do()
}

// onceScripter runs a redis.Script's EVALSHA and EVAL through c as onceCmd commands: give it
// to Script.Run for a script that must not run twice.
type onceScripter struct{ redis.UniversalClient }

func (o onceScripter) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return o.eval(ctx, "evalsha", sha1, keys, args)
}

func (o onceScripter) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return o.eval(ctx, "eval", script, keys, args)
}

func (o onceScripter) eval(ctx context.Context, name, script string, keys []string, args []any) *redis.Cmd {
	return onceEval(ctx, o, name, script, keys, args)
}

// onceEval queues or sends (through c, a client or a pipeline) the EVAL or EVALSHA name of
// script with keys and args as a onceCmd, and returns it.
func onceEval(ctx context.Context, c interface {
	Process(context.Context, redis.Cmder) error
}, name, script string, keys []string, args []any) *redis.Cmd {
	cmdArgs := make([]any, 0, 3+len(keys)+len(args))
	cmdArgs = append(cmdArgs, name, script, len(keys))
	for _, k := range keys {
		cmdArgs = append(cmdArgs, k)
	}
	cmdArgs = append(cmdArgs, args...)
	cmd := redis.NewCmd(ctx, cmdArgs...)
	if len(keys) > 0 {
		cmd.SetFirstKeyPos(3)
	}
	_ = c.Process(ctx, onceCmd{cmd})
	return cmd
}

// runScriptOnce runs sc (EVALSHA, EVAL when the server lacks it) as a command that must not
// run twice: go-redis does not run it again, runOnce does after a refusal.
func runScriptOnce(ctx context.Context, c redis.UniversalClient, sc *redis.Script, keys []string, args []any) *redis.Cmd {
	var cmd *redis.Cmd
	_ = runOnce(ctx, func() error {
		cmd = sc.Run(ctx, onceScripter{c}, keys, args...)
		return cmd.Err()
	})
	return cmd
}
