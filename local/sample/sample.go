// Package sample writes synthetic payroll CSV files for the demo, tests and
// benchmarks. The data is made up and deterministic for a seed, so a test
// can regenerate the file it sent and check every row that arrived.
package sample

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
)

// Columns is the header of a sample file.
var Columns = []string{"employee_id", "name", "iban", "amount", "currency", "pay_date"}

var (
	first = []string{"Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Niklaus"}
	last  = []string{"Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Hamilton", "Ritchie", "Allen", "Wirth"}
)

// Write writes a header and rows data rows to w. Some names carry a comma
// or a quote, so the file exercises CSV quoting the way real exports do.
func Write(w io.Writer, rows int, seed uint64) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	if _, err := fmt.Fprintln(bw, "employee_id,name,iban,amount,currency,pay_date"); err != nil {
		return fmt.Errorf("write header: %w", err)
	}
	for i := 1; i <= rows; i++ {
		name := first[rng.IntN(len(first))] + " " + last[rng.IntN(len(last))]
		switch i % 97 {
		case 0:
			name = `"` + name + `, Jr."` // a comma inside a quoted field
		case 13:
			name = `"` + name + ` ""The Boss"""` // doubled quotes
		}
		cents := 100_000 + rng.IntN(900_000)
		_, err := fmt.Fprintf(bw, "E%07d,%s,DE%020d,%d.%02d,EUR,2026-11-30\n",
			i, name, rng.Uint64()%1e18, cents/100, cents%100)
		if err != nil {
			return fmt.Errorf("write row %d: %w", i, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("flush sample: %w", err)
	}
	return nil
}
