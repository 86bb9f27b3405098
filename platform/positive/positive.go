// Package positive fills in the options a caller left unset. Spool's
// option structs take zero as "the default", and a negative count, size or
// duration means nothing sensible either, so both get the default: one
// rule, written once, instead of an if-block per field.
//
// Options whose zero value is nil (a logger, a clock) need no helper:
// cmp.Or does that. Functions, which cannot be compared, keep their if.
package positive

// Number is what Or takes: the signed integers and time.Duration, whose
// values may be negative. Unsigned types have nothing to guard against.
type Number interface {
	~int | ~int8 | ~int16 | ~int32 | ~int64
}

// Or returns v when it is above zero, and def otherwise.
func Or[T Number](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}
