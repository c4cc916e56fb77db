package logs

import "strings"

// Clip bounds untrusted text before it goes into a page, a redirect, an event or a message:
// control characters become spaces, and text longer than n bytes is cut on a UTF-8 boundary
// and followed by the cut mark, which scrubbing recognises (a secret cut in half there is
// still removed).
func Clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > n {
		cut := n
		for cut > 0 && s[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
			cut--
		}
		s = s[:cut] + cutMark
	}
	return s
}
