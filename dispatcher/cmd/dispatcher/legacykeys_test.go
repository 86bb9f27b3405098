package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/tablelayout"
)

func TestLedgerLegacyKeysFlag(t *testing.T) {
	required := []string{"-insecure", "-queue-url", "http://q", "-table", "jobs", "-destination-url", "https://dest/pay"}
	tests := []struct {
		name    string
		flag    string // -ledger-legacy-keys, or none when empty
		env     string // SPOOL_LEDGER_LEGACY_KEYS, or unset when empty
		want    legacyKeysMode
		wantErr string
	}{
		{name: "default", want: legacyKeysAuto},
		{name: "auto", flag: "auto", want: legacyKeysAuto},
		{name: "on", flag: "on", want: legacyKeysOn},
		{name: "off", flag: "off", want: legacyKeysOff},
		{name: "true, as when it was a boolean", flag: "true", want: legacyKeysOn},
		{name: "false, as when it was a boolean", flag: "false", want: legacyKeysOff},
		{name: "off from the environment", env: "off", want: legacyKeysOff},
		{name: "false from the environment", env: "false", want: legacyKeysOff},
		{name: "the flag wins over the environment", flag: "on", env: "off", want: legacyKeysOn},
		{name: "unknown", flag: "maybe", wantErr: `"maybe": want auto, on or off`},
		{name: "unknown from the environment", env: "sometimes", wantErr: `"sometimes": want auto, on or off`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := required
			if tt.flag != "" {
				args = append([]string{"-ledger-legacy-keys=" + tt.flag}, required...)
			}
			lookup := func(k string) (string, bool) {
				if k == "SPOOL_LEDGER_LEGACY_KEYS" && tt.env != "" {
					return tt.env, true
				}
				return "", false
			}
			c, err := parseConfig(args, lookup, io.Discard)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, c.legacyKeys)
		})
	}
}

// layoutTable is a fake table holding at most a layout item.
type layoutTable struct {
	item  map[string]ddbtypes.AttributeValue
	err   error
	reads int
}

func (f *layoutTable) GetItem(_ context.Context, in *dynamodb.GetItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	f.reads++
	if !aws.ToBool(in.ConsistentRead) {
		return nil, errors.New("the layout must be read consistently: a table provisioned a moment ago is seen as it is")
	}
	if aws.ToString(in.TableName) != "jobs" {
		return nil, errors.New("wrong table")
	}
	if f.err != nil {
		return nil, f.err
	}
	if pk, _ := in.Key[tablelayout.PK].(*ddbtypes.AttributeValueMemberS); pk == nil || pk.Value != tablelayout.Layout().PK {
		return &dynamodb.GetItemOutput{}, nil
	}
	return &dynamodb.GetItemOutput{Item: f.item}, nil
}

func TestLegacyKeysDecision(t *testing.T) {
	withKeys := func(v ddbtypes.AttributeValue) map[string]ddbtypes.AttributeValue {
		item := tablelayout.Layout().Item()
		item[tablelayout.LayoutLedgerKeys] = v
		return item
	}
	tests := []struct {
		name      string
		mode      legacyKeysMode
		table     layoutTable
		want      bool
		wantReads int
		wantLog   string
		wantErr   string
	}{
		{name: "auto, a table that began namespaced", table: layoutTable{item: tablelayout.LayoutItem(time.Now())}, want: false, wantReads: 1},
		{name: "auto, a table without the layout item", want: true, wantReads: 1, wantLog: "SPOOL_LEDGER_LEGACY_KEYS=off"},
		{name: "auto, the table cannot be read", table: layoutTable{err: errors.New("throttled")}, wantReads: 1, wantErr: "read the layout item of table jobs for -ledger-legacy-keys=auto (set on or off to start without it): throttled"},
		{name: "auto, a format from elsewhere", table: layoutTable{item: withKeys(&ddbtypes.AttributeValueMemberS{Value: "v3"})}, wantReads: 1, wantErr: `ledger_keys is "v3", want "namespaced"`},
		{name: "auto, a layout item without the format", table: layoutTable{item: tablelayout.Layout().Item()}, wantReads: 1, wantErr: "ledger_keys is missing"},
		{name: "on reads nothing", mode: legacyKeysOn, table: layoutTable{item: tablelayout.LayoutItem(time.Now())}, want: true},
		{name: "off reads nothing", mode: legacyKeysOff, table: layoutTable{err: errors.New("down")}, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&logs, nil))
			got, err := legacyKeys(context.Background(), &tt.table, "jobs", tt.mode, log)
			require.Equal(t, tt.wantReads, tt.table.reads)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			if tt.wantLog == "" {
				require.Empty(t, logs.String())
			} else {
				require.Equal(t, 1, bytes.Count(logs.Bytes(), []byte("\n")), "logged once: %s", logs.String())
				require.Contains(t, logs.String(), tt.wantLog)
			}
		})
	}
}
