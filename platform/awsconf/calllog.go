package awsconf

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
)

// CallLogEnv names a file to which a process appends one JSON line for
// each distinct AWS call it makes: which program, which operation, on which
// table, index or queue. The end-to-end tests turn it on to prove that the
// IAM policies in deploy/ecs/iam allow exactly what the code calls. Unset
// (always, in production), nothing is recorded.
const CallLogEnv = "SPOOL_AWS_CALL_LOG"

// Call is one AWS call as the IAM policies see it: the operation and the
// resource it names.
type Call struct {
	// Program is the binary that made the call: ingestor, dispatcher,
	// spool.
	Program string `json:"program"`
	// Service is the SDK's service id: "SQS", "DynamoDB".
	Service   string `json:"service"`
	Operation string `json:"operation"`
	// Table and Index are the DynamoDB table and, for a Query or Scan of a
	// secondary index, the index.
	Table string `json:"table,omitempty"`
	Index string `json:"index,omitempty"`
	// Queue is the SQS queue URL, or the queue name for the calls that take
	// a name (CreateQueue, GetQueueUrl).
	Queue string `json:"queue,omitempty"`
}

// callLog appends each call it has not seen yet to its file. Each line is
// one write on a file opened for appending, so the processes of a test
// can share one file, and a process killed at any moment leaves whole
// lines.
type callLog struct {
	program string
	mu      sync.Mutex
	f       *os.File
	seen    map[Call]bool
}

func openCallLog(path string) (*callLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open AWS call log: %w", err)
	}
	return &callLog{program: filepath.Base(os.Args[0]), f: f, seen: map[Call]bool{}}, nil
}

// register adds the recorder to every client's middleware stack, after
// the step that names the service and operation.
func (l *callLog) register(s *middleware.Stack) error {
	return s.Initialize.Add(middleware.InitializeMiddlewareFunc("spool.callLog",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			l.record(ctx, in.Parameters)
			return next.HandleInitialize(ctx, in)
		}), middleware.After)
}

func (l *callLog) record(ctx context.Context, params any) {
	c := Call{
		Program:   l.program,
		Service:   awsmiddleware.GetServiceID(ctx),
		Operation: awsmiddleware.GetOperationName(ctx),
		Table:     stringField(params, "TableName"),
		Index:     stringField(params, "IndexName"),
		Queue:     stringField(params, "QueueUrl"),
	}
	if c.Queue == "" {
		c.Queue = stringField(params, "QueueName")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen[c] {
		return
	}
	l.seen[c] = true
	line, _ := json.Marshal(c)
	// A failed write loses evidence, which the test reading the log
	// notices as a missing call; it must never fail the call itself.
	_, _ = l.f.Write(append(line, '\n'))
}

// stringField reads the *string field name of the operation input params
// (every input is a pointer to a struct), or "".
func stringField(params any, name string) string {
	v := reflect.ValueOf(params)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return ""
	}
	f := v.Elem().FieldByName(name)
	if !f.IsValid() || f.Type() != reflect.TypeFor[*string]() {
		return ""
	}
	return aws.ToString(f.Interface().(*string))
}

// ReadCallLog returns the distinct calls a call log holds.
func ReadCallLog(path string) ([]Call, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read AWS call log: %w", err)
	}
	defer f.Close()
	seen := map[Call]bool{}
	var calls []Call
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		var c Call
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			return nil, fmt.Errorf("read AWS call log %s line %d: %w", path, n, err)
		}
		if !seen[c] {
			seen[c] = true
			calls = append(calls, c)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read AWS call log %s: %w", path, err)
	}
	return calls, nil
}
