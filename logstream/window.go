package logstream

import "slices"

// maxWindowIDs bounds the ids a stream remembers in its late window (56 bytes and a 16-byte
// header each: about 7 MiB, and up to a quarter more of forgotten ones until the array grows). Past it the oldest are forgotten and the window's floor rises: the late
// re-read then covers less than LateWindow (an event written that late and below the floor
// is sent again after a restart only).
const maxWindowIDs = 100_000

// readWindow is the set of the log ids a stream has read above floor: the events it sent or
// its type filter passed. The late re-read sends the entries above floor that it lacks.
type readWindow struct {
	floor string   // ids at or below it are not remembered, nor re-read
	ids   []string // ascending, all above floor
}

// has reports whether id was read.
func (w *readWindow) has(id string) bool {
	_, ok := slices.BinarySearch(w.ids, id)
	return ok
}

// add notes id as read; an id at or below the floor is ignored.
func (w *readWindow) add(id string) {
	if id <= w.floor {
		return
	}
	i, ok := slices.BinarySearch(w.ids, id)
	if ok {
		return
	}
	if i == len(w.ids) {
		w.ids = append(w.ids, id) // the usual case: ids are read in ascending order
	} else {
		w.ids = slices.Insert(w.ids, i, id)
	}
	if n := len(w.ids) - maxWindowIDs; n > 0 {
		w.raise(w.ids[n-1])
	}
}

// below returns the highest id read below limit, or "" when there is none.
func (w *readWindow) below(limit string) string {
	i, _ := slices.BinarySearch(w.ids, limit)
	if i == 0 {
		return ""
	}
	return w.ids[i-1]
}

// raise moves the floor up to floor, forgetting the ids at or below it.
func (w *readWindow) raise(floor string) {
	if floor <= w.floor {
		return
	}
	w.floor = floor
	i, ok := slices.BinarySearch(w.ids, floor)
	if ok {
		i++
	}
	// Re-sliced, not shifted: past maxWindowIDs every add raises the floor by one id, and
	// after every stored position the floor rises too, so moving the ids left would copy up to
	// maxWindowIDs of them per event read. The forgotten ids stay in the backing array (at
	// most about 1.25·maxWindowIDs) until append next grows it, copying only those kept.
	w.ids = w.ids[i:]
}
