package report

import (
	"fmt"
	"os"
	"runtime"
)

// Machine describes the machine the figures are relative to.
func Machine() string {
	s := fmt.Sprintf("%d cores", runtime.NumCPU())
	if l, ok := LoadAverage(); ok {
		s += fmt.Sprintf(", load %.1f at the start", l)
	}
	return s
}

// LoadAverage is the machine's one-minute load average, where the system
// tells it.
func LoadAverage() (float64, bool) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, false
	}
	var l1 float64
	if _, err := fmt.Sscan(string(b), &l1); err != nil {
		return 0, false
	}
	return l1, true
}
