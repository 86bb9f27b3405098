package profile

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// Body returns the JSON body of a valid row, or "" when the profile maps
// none. Decimals are copied digit for digit, never through a float.
func (v *Validator) Body(fields []string, m Meta) string {
	if len(v.body) == 0 {
		return ""
	}
	b := &v.buf
	b.Reset()
	b.WriteByte('{')
	for i, f := range v.body {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(f.key)
		switch {
		case f.meta == spoolv1.BodyMeta_BODY_META_JOB_ID:
			writeString(b, m.JobID)
		case f.meta == spoolv1.BodyMeta_BODY_META_ROW:
			b.WriteString(strconv.FormatInt(m.Row, 10))
		case f.meta == spoolv1.BodyMeta_BODY_META_TRANSACTION_KEY:
			writeString(b, m.TransactionKey)
		case f.col < 0:
			writeValue(b, f.constant, f.number)
		default:
			c := v.checks[f.col]
			val := fields[f.col]
			switch {
			case val == "":
				if c.spec != nil && c.spec.GetOptional() {
					b.WriteString("null")
				} else {
					writeString(b, val)
				}
			case c.spec.GetType() == spoolv1.ColumnType_COLUMN_TYPE_INTEGER:
				n, _ := strconv.ParseInt(val, 10, 64)
				b.WriteString(strconv.FormatInt(n, 10))
			case c.spec.GetType() == spoolv1.ColumnType_COLUMN_TYPE_DECIMAL:
				writeValue(b, val, f.number)
			default:
				writeString(b, val)
			}
		}
	}
	b.WriteByte('}')
	return b.String()
}

// writeValue writes a decimal as a JSON number, in the form JSON allows
// (no plus sign, no leading zeros, digits around the point), or any value
// as a string.
func writeValue(b *bytes.Buffer, val string, number bool) {
	if !number {
		writeString(b, val)
		return
	}
	b.WriteString(JSONNumber(val))
}

// JSONNumber rewrites a valid decimal as a JSON number with the same
// value and the same digits after the point: "+007.50" is "7.50", ".5" is
// "0.5", "5." is "5".
func JSONNumber(d string) string {
	neg := strings.HasPrefix(d, "-")
	d = strings.TrimLeft(d, "+-")
	intPart, frac, _ := strings.Cut(d, ".")
	intPart = strings.TrimLeft(intPart, "0")
	if intPart == "" {
		intPart = "0"
	}
	out := intPart
	if frac != "" {
		out += "." + frac
	}
	if neg && strings.Trim(out, "0.") != "" {
		out = "-" + out
	}
	return out
}

func writeString(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s) // a string always marshals
	b.Write(q)
}
