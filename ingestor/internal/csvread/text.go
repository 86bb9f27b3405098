package csvread

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// CheckText returns why s cannot travel as a value, or "" when it can. SQS
// accepts only these characters in a message: #x9 | #xA | #xD |
// #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF, and the envelope's
// strings must be valid UTF-8; a value outside that would fail the whole
// SQS batch it is in, so it is refused here, with its row.
func CheckText(s string) string {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
				return fmt.Sprintf("control character U+%04X at byte %d (SQS refuses it)", c, i)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return fmt.Sprintf("invalid UTF-8 at byte %d (save the file as UTF-8)", i)
		}
		if r == 0xFFFE || r == 0xFFFF {
			return fmt.Sprintf("non-character U+%04X at byte %d (SQS refuses it)", r, i)
		}
		i += size
	}
	return ""
}

// maxExcerpt is how many characters of a value a report shows.
const maxExcerpt = 32

// Excerpt returns the start of a value for a report: at most 32
// characters, control characters and invalid bytes escaped, "…" when cut.
// Reports go to the caller who sent the value; logs never carry it.
func Excerpt(s string) string {
	var b strings.Builder
	n := 0
	for i := 0; i < len(s); {
		if n == maxExcerpt {
			b.WriteString("…")
			break
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x20 || r == 0x7F || r == 0xFFFE || r == 0xFFFF:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
		n++
	}
	return b.String()
}
