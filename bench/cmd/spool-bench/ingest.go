package main

import (
	"fmt"
	"time"

	"github.com/spoolhq/spool/bench/internal/report"
	"github.com/spoolhq/spool/bench/internal/scenario"
)

// ingestRows are the ingest part's rows: each way's rate beside the raw
// loop's, then what each used of the CPU per row, which says why when a
// ratio is low: on two shared cores the senders and the emulator divide
// the same CPU, so a sender that needs more per row leaves the emulator
// less.
func ingestRows(in scenario.IngestResult) []report.Row {
	const raw = "raw SendMessageBatch, 8 senders"
	lo, hi := in.Range(scenario.Raw)
	rows := []report.Row{{
		Name: "ingest: raw aws-sdk-go-v2 SendMessageBatch loop, 8 senders", Value: in.Rate(scenario.Raw), Unit: "rows/s",
		Note: fmt.Sprintf("%d rows a run; median of %d runs (%.0f–%.0f), one before the first other run and one after each", in.Rows, len(in.Runs[scenario.Raw]), lo, hi),
	}}
	judged := fmt.Sprintf("median of %d runs, each against the mean of the raw loops just before and after it", len(in.Runs[scenario.Chunks]))
	// sized is how a way compares with the raw loop sending messages of
	// Spool's size, both judged against the plain raw loops around them.
	sized := func(w scenario.Way) string {
		if in.Ratio(scenario.RawSized) == 0 {
			return ""
		}
		return fmt.Sprintf("; %.2f of the raw loop with messages of Spool's size", in.Ratio(w)/in.Ratio(scenario.RawSized))
	}
	for _, w := range []struct {
		way   scenario.Way
		name  string
		floor float64
		note  string
	}{
		{scenario.Chunks, "ingest: StreamFile, CSV chunks (spool send)", ingestFloor, judged + sized(scenario.Chunks)},
		{scenario.RowBatches, "ingest: StreamFile, row batches", ingestFloor, judged + "; 500 rows per RowBatch message" + sized(scenario.RowBatches)},
		{scenario.Gocloud, "ingest: gocloud.dev pubsub/awssnssqs SQS topic (aws-sdk-go-v2)", 0, judged + "; MaxHandlers 8, 80 goroutines sending; a baseline, no floor"},
		{scenario.RawSized, "ingest: the raw loop, messages of Spool's size", 0, judged + "; each JSON body padded with spaces to the length of its row's Spool message (a V2 envelope, which has no attribute): what the message's size costs any sender on this emulator; no floor"},
	} {
		rows = append(rows, report.Row{
			Name: w.name, Value: in.Rate(w.way), Unit: "rows/s", Baseline: in.Rate(scenario.Raw), BaselineName: raw,
			Ratio: in.Ratio(w.way), Min: w.floor, Note: w.note,
		})
	}
	if in.Sender(scenario.Raw) == 0 {
		return rows // no /proc: no CPU figures
	}
	for _, w := range []struct {
		way           scenario.Way
		name, senders string
	}{
		{scenario.Raw, "raw loop", "this process"},
		{scenario.RawSized, "raw loop, messages of Spool's size", "this process"},
		{scenario.Chunks, "StreamFile, CSV chunks", "the CLI and the ingestor"},
		{scenario.RowBatches, "StreamFile, row batches", "this process's client and the ingestor"},
		{scenario.Gocloud, "gocloud.dev", "this process"},
	} {
		r := report.Row{
			Name:  "ingest CPU per row: " + w.name,
			Value: micros(cpu(in, w.way)), Unit: "µs",
			Note: fmt.Sprintf("senders (%s) %.1f µs, the SQS emulator %.1f µs, DynamoDB's %.1f µs",
				w.senders, micros(in.Sender(w.way)), micros(in.SQS(w.way)), micros(in.DynamoDB(w.way))),
		}
		if w.way != scenario.Raw {
			r.Baseline, r.BaselineName = micros(cpu(in, scenario.Raw)), "the raw loop's"
		}
		rows = append(rows, r)
	}
	return rows
}

// cpu is the CPU per row of way's senders and the emulators together.
func cpu(in scenario.IngestResult, w scenario.Way) time.Duration {
	return in.Sender(w) + in.SQS(w) + in.DynamoDB(w)
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
