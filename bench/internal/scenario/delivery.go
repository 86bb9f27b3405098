package scenario

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
)

// Delivery is one delivery run's setting: dispatchers × concurrency
// against the sink with a fixed latency and a share of random 503s.
type Delivery struct {
	Name        string
	Dispatchers int
	Concurrency int
	Latency     time.Duration
	FailRate    float64
	// EveryLossCuts runs the dispatchers with every 5xx cutting their
	// concurrency limit (-concurrency-every-loss-cuts): the loss rule
	// before losses were judged against the destination's usual rate.
	EveryLossCuts bool
	// MessagesHeld, when above 0, is the dispatchers' -messages-held;
	// their default (twice the concurrency) otherwise.
	MessagesHeld int
	Rows         int
	// CountCalls counts the AWS calls of the run (see callCounter).
	CountCalls bool
}

// Ideal is Little's law's rows/s: every slot of every dispatcher busy all
// the time, each request taking the latency. Zero without a latency.
func (d Delivery) Ideal() float64 {
	if d.Latency <= 0 {
		return 0
	}
	return float64(d.Dispatchers*d.Concurrency) / d.Latency.Seconds()
}

// DeliveryResult is what a delivery run measured.
type DeliveryResult struct {
	// Rate is the steady rows/s (10 % to 90 % of the job at the sink);
	// Wall the time from sending the file to its last row at the sink.
	Rate float64
	Wall time.Duration
	// Seed is the seed's loop, one row at a time, against the same sink;
	// measured when asked for.
	Seed float64
	// Calls counts the AWS calls made from sending the file to its last
	// row at the sink, by "service operation"; when asked for.
	Calls map[string]int64
	// Flow is the dispatchers' flow control over the steady part.
	Flow FlowSample
}

// Deliver sends a file of d.Rows rows through a fresh stack set up as d
// and measures how fast it reaches the sink. With seedFor > 0 it then
// runs the seed's loop against the same sink for that long.
func (e Env) Deliver(ctx context.Context, d Delivery, seedFor time.Duration) (DeliveryResult, error) {
	var res DeliveryResult
	sinkArgs := []string{"-latency", d.Latency.String(), "-seed", "1"}
	if d.FailRate > 0 {
		sinkArgs = append(sinkArgs, "-fail-rate", strconv.FormatFloat(d.FailRate, 'f', -1, 64))
	}
	var calls *callCounter
	if d.CountCalls {
		calls = newCallCounter()
		defer calls.close()
	}
	dispatcherArgs := []string{"-concurrency", strconv.Itoa(d.Concurrency)}
	if d.EveryLossCuts {
		dispatcherArgs = append(dispatcherArgs, "-concurrency-every-loss-cuts")
	}
	if d.MessagesHeld > 0 {
		dispatcherArgs = append(dispatcherArgs, "-messages-held", strconv.Itoa(d.MessagesHeld))
	}
	s, err := e.up(ctx, d.Name, d.Dispatchers, dispatcherArgs, sinkArgs, calls)
	if err != nil {
		return res, err
	}
	defer func() {
		if calls != nil {
			// Spool's processes first, then the proxies between them and
			// the emulators, then the emulators: an emulator waits for
			// open connections before it exits.
			for _, p := range append(append(s.Dispatchers, s.Ingestor), s.Sink) {
				if err := p.Stop(30 * time.Second); err != nil {
					fmt.Fprintf(e.Log, "%s: stop %s: %v\n", d.Name, p.Name, err)
				}
			}
			calls.close()
		}
		if err := s.Down(); err != nil {
			fmt.Fprintf(e.Log, "%s: stack down: %v\n", d.Name, err)
		}
	}()
	file, err := e.sampleFile(d.Rows)
	if err != nil {
		return res, err
	}
	var before map[string]int64
	if calls != nil {
		before = calls.snapshot()
	}
	start := time.Now()
	job, err := e.send(ctx, s, file)
	if err != nil {
		return res, fmt.Errorf("%s: %w", d.Name, err)
	}
	// Generous: a loaded machine may be far below the ideal; a stuck job
	// still ends the run.
	timeout := 2*time.Minute + 10*time.Duration(float64(d.Rows)/max(d.Ideal(), 50)*float64(time.Second))
	// The flow control is sampled over the part of the run the rate is
	// measured on.
	var delivered atomic.Int64
	var urls []string
	for _, p := range s.Dispatchers {
		if p.MetricsURL != "" {
			urls = append(urls, p.MetricsURL)
		}
	}
	stopSampling := sampleFlow(ctx, urls, func() bool {
		n := delivered.Load()
		return n >= int64(d.Rows)/10 && n < int64(d.Rows)*9/10
	})
	p, err := waitDelivered(ctx, s.Sink.Addr, job, int64(d.Rows), timeout, delivered.Store)
	res.Flow = stopSampling()
	if err != nil {
		return res, fmt.Errorf("%s: %w", d.Name, err)
	}
	res.Wall = time.Since(start)
	res.Rate = p.steadyRate(int64(d.Rows))
	if calls != nil {
		res.Calls = calls.since(before)
	}
	fmt.Fprintf(e.Log, "%s: %d rows in %s, steady %.1f rows/s; %s\n", d.Name, d.Rows, res.Wall.Round(time.Millisecond), res.Rate, res.Flow)
	if seedFor > 0 {
		if res.Seed, err = seedLoop(ctx, s.Sink.Addr, file, seedFor); err != nil {
			return res, fmt.Errorf("%s: seed's loop: %w", d.Name, err)
		}
		fmt.Fprintf(e.Log, "%s: the seed's loop, %.2f rows/s\n", d.Name, res.Seed)
	}
	return res, nil
}
