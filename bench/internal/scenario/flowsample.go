package scenario

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FlowSample is what the dispatchers' metrics pages said during a delivery
// run, sampled every flowSampleEvery: how far the concurrency limit and the
// slots in use were from the configured concurrency, which tells whether
// the limit or something else held a run below its ideal.
type FlowSample struct {
	// Limit and InFlight are the means over the samples, summed over the
	// dispatchers; LimitMin is the lowest limit one dispatcher had.
	Limit, InFlight float64
	LimitMin        float64
	// Samples is how many scrapes the means are over.
	Samples int
}

func (f FlowSample) String() string {
	if f.Samples == 0 {
		return "flow not sampled"
	}
	return fmt.Sprintf("limit %.1f (lowest %.0f), in flight %.1f, %d samples", f.Limit, f.LimitMin, f.InFlight, f.Samples)
}

const flowSampleEvery = 250 * time.Millisecond

// flowSampler scrapes the dispatchers' metrics pages until stopped.
type flowSampler struct {
	urls []string
	// count tells whether to count this scrape: samples are taken only
	// during the steady part of a run, as the rate is.
	count func() bool

	mu       sync.Mutex
	limit    float64
	inflight float64
	limitMin float64
	n        int
}

// sampleFlow starts sampling urls; stop ends it and returns the means.
func sampleFlow(ctx context.Context, urls []string, count func() bool) (stop func() FlowSample) {
	s := &flowSampler{urls: urls, count: count, limitMin: -1}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(flowSampleEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.scrape(ctx)
			}
		}
	})
	return func() FlowSample {
		cancel()
		wg.Wait()
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.n == 0 {
			return FlowSample{}
		}
		return FlowSample{Limit: s.limit / float64(s.n), InFlight: s.inflight / float64(s.n), LimitMin: s.limitMin, Samples: s.n}
	}
}

func (s *flowSampler) scrape(ctx context.Context) {
	if !s.count() {
		return
	}
	var limit, inflight float64
	lowest := -1.0
	for _, u := range s.urls {
		m, err := scrapeGauges(ctx, u, "spool_concurrency_limit", "spool_in_flight")
		if err != nil {
			// A missed scrape is one sample fewer, not a failed run.
			return
		}
		limit += m["spool_concurrency_limit"]
		inflight += m["spool_in_flight"]
		if lowest < 0 || m["spool_concurrency_limit"] < lowest {
			lowest = m["spool_concurrency_limit"]
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limit += limit
	s.inflight += inflight
	if s.limitMin < 0 || lowest < s.limitMin {
		s.limitMin = lowest
	}
	s.n++
}

// scrapeGauges reads the named unlabelled series of a Prometheus text page.
func scrapeGauges(ctx context.Context, url string, names ...string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	return parseGauges(resp.Body, names...)
}

func parseGauges(r io.Reader, names ...string) (map[string]float64, error) {
	out := make(map[string]float64, len(names))
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		for _, n := range names {
			if name == n {
				v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
				if err != nil {
					return nil, fmt.Errorf("metric %s: %w", n, err)
				}
				out[n] = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("no metric %s", n)
		}
	}
	return out, nil
}
