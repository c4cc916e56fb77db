package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
)

// Socket activation, systemd's protocol (sd_listen_fds(3)): the supervisor opens the listening
// socket itself and starts `broker serve` with it as file descriptor 3, announced by
// LISTEN_FDS=1 and LISTEN_PID=<the broker's process id>. The broker then serves on that socket
// and ignores `listen`. The supervisor decides the address (and may bind a port the broker's
// user could not), the socket exists before the broker starts (connections queue instead of
// being refused during a restart), and a parent that has to know the port before the child
// runs (tests, whose issuer contains the port) cannot lose it to another process.

// listenFDsStart is the first file descriptor passed by socket activation (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// The socket-activation environment variables.
const (
	envListenFDs     = "LISTEN_FDS"
	envListenPID     = "LISTEN_PID"
	envListenFDNames = "LISTEN_FDNAMES"
)

// activation is what inheritedListener reads: the environment, this process's id and the
// inherited file descriptor (functions so that tests can supply them).
type activation struct {
	getenv   func(string) string
	unsetenv func(string) error
	pid      int
	file     func(fd uintptr, name string) *os.File
}

// processActivation reads the real environment and file descriptors of this process.
func processActivation() activation {
	return activation{getenv: os.Getenv, unsetenv: os.Unsetenv, pid: os.Getpid(), file: os.NewFile}
}

// inheritedListener returns the listening socket passed by socket activation, or nil when none
// was passed to this process. ignored explains why LISTEN_FDS was present but not meant for
// this process (no LISTEN_PID, or another process's id): as with systemd's sd_listen_fds the
// variables are then left alone and the caller listens itself. It fails, rather than guess,
// when the variables are malformed, announce more than the one socket the broker serves, or
// descriptor 3 is not a stream socket. Once the variables are for this process they are
// removed from the environment, so no child process takes them for its own; the descriptor
// is replaced by a close-on-exec duplicate.
func inheritedListener(a activation) (ln net.Listener, ignored string, err error) {
	fds := a.getenv(envListenFDs)
	if fds == "" {
		return nil, "", nil
	}
	pidText := a.getenv(envListenPID)
	if pidText == "" {
		return nil, envListenFDs + " is set without " + envListenPID, nil
	}
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 {
		return nil, "", fmt.Errorf("socket activation: %s=%q is not a process id", envListenPID, pidText)
	}
	if pid != a.pid {
		return nil, fmt.Sprintf("%s=%d is another process (this is %d)", envListenPID, pid, a.pid), nil
	}
	for _, k := range []string{envListenFDs, envListenPID, envListenFDNames} {
		if err := a.unsetenv(k); err != nil {
			return nil, "", fmt.Errorf("socket activation: unset %s: %w", k, err)
		}
	}
	n, err := strconv.Atoi(fds)
	switch {
	case err != nil || n < 0:
		return nil, "", fmt.Errorf("socket activation: %s=%q is not a number of file descriptors", envListenFDs, fds)
	case n == 0:
		return nil, "", nil
	case n > 1:
		return nil, "", fmt.Errorf("socket activation: %s=%d, but broker serve serves exactly one socket", envListenFDs, n)
	}
	f := a.file(listenFDsStart, "LISTEN_FD_3")
	if f == nil {
		return nil, "", errors.New("socket activation: file descriptor 3 is not open")
	}
	defer f.Close() // FileListener keeps its own close-on-exec duplicate
	ln, err = net.FileListener(f)
	if err != nil {
		return nil, "", fmt.Errorf("socket activation: file descriptor 3 is not a listening stream socket: %w", err)
	}
	return ln, "", nil
}

// openListener returns the socket `broker serve` serves on: the one passed by socket
// activation (inherited true; the listen address is then ignored, and logged as such), else a
// new one bound to addr.
func openListener(addr string, a activation, logger *slog.Logger) (ln net.Listener, inherited bool, err error) {
	ln, ignored, err := inheritedListener(a)
	if err != nil {
		return nil, false, err
	}
	if ignored != "" {
		logger.Warn("socket activation variables ignored: not meant for this process", "reason", ignored, "listen", addr)
	}
	if ln != nil {
		logger.Info("socket activation: serving on the inherited socket; listen is ignored",
			"addr", ln.Addr().String(), "listen", addr)
		return ln, true, nil
	}
	ln, err = net.Listen("tcp", addr)
	return ln, false, err
}
