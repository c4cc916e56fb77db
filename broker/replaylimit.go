package broker

import "github.com/dpop-broker/dpop-broker/sessions"

// The DPoP proof replay cache (RFC 9449 §11.1) stores one record per accepted proof at
// /userinfo and /oauth/token for dpop_server.max_age + max_future. Anyone holding one valid
// DPoP-bound token can grow it, so in the memory store it has its own budget
// (store.memory.max_replay_records, default half of max_records): when the budget is full,
// proofs are refused fail-closed (503 at the endpoint that checks them) while login
// transactions, codes, sessions and refresh tokens keep the rest of the room. The rate
// limits per session (/userinfo) and per refresh-token family (/oauth/token) bound how fast
// one login can fill it. Redis has no per-kind bound: size its maxmemory for the replay
// traffic (README, "Bounded state").

// replayRecords is the memory store's budget for proof jtis: max_replay_records, or half of
// max_records when it is 0.
func (m MemoryStoreConfig) replayRecords() int {
	if m.MaxReplayRecords > 0 {
		return m.MaxReplayRecords
	}
	return max(m.MaxRecords/2, 1)
}

// options are the memory store's options: the record limit and the replay budget.
func (m MemoryStoreConfig) options() sessions.MemoryOptions {
	return sessions.MemoryOptions{
		MaxRecords: m.MaxRecords,
		KindLimits: map[sessions.Kind]int{sessions.KindJTI: m.replayRecords()},
	}
}

// replayRecords validates store.memory.max_replay_records: 0 (half of max_records) or at
// most max_records (equal: no budget of its own).
func (v *validator) replayRecords(m *MemoryStoreConfig) {
	if n := m.MaxReplayRecords; n < 0 || n > m.MaxRecords {
		v.add("store.memory.max_replay_records", "must be between 0 (half of max_records) and max_records (%d)", m.MaxRecords)
	}
}
