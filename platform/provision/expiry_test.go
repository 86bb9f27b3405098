package provision_test

import (
	"context"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/provision"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// fakeExpiry answers DescribeTimeToLive with desc and records updates.
type fakeExpiry struct {
	desc     *ddbtypes.TimeToLiveDescription
	err      error
	updates  []string
	describe int
}

func (f *fakeExpiry) DescribeTimeToLive(_ context.Context, _ *dynamodb.DescribeTimeToLiveInput, _ ...func(*dynamodb.Options)) (*dynamodb.DescribeTimeToLiveOutput, error) {
	f.describe++
	if f.err != nil {
		return nil, f.err
	}
	return &dynamodb.DescribeTimeToLiveOutput{TimeToLiveDescription: f.desc}, nil
}

func (f *fakeExpiry) UpdateTimeToLive(_ context.Context, in *dynamodb.UpdateTimeToLiveInput, _ ...func(*dynamodb.Options)) (*dynamodb.UpdateTimeToLiveOutput, error) {
	f.updates = append(f.updates, aws.ToString(in.TimeToLiveSpecification.AttributeName))
	return &dynamodb.UpdateTimeToLiveOutput{}, nil
}

func TestEnsureExpiry(t *testing.T) {
	tests := []struct {
		name        string
		fake        fakeExpiry
		wantUpdates []string
		wantErr     string
		unsupported bool
	}{
		{name: "off is turned on", fake: fakeExpiry{desc: &ddbtypes.TimeToLiveDescription{TimeToLiveStatus: ddbtypes.TimeToLiveStatusDisabled}},
			wantUpdates: []string{"expires_at"}},
		{name: "no description is turned on", wantUpdates: []string{"expires_at"}},
		{name: "on is left", fake: fakeExpiry{desc: &ddbtypes.TimeToLiveDescription{
			TimeToLiveStatus: ddbtypes.TimeToLiveStatusEnabled, AttributeName: aws.String("expires_at")}}},
		{name: "turning on is left", fake: fakeExpiry{desc: &ddbtypes.TimeToLiveDescription{
			TimeToLiveStatus: ddbtypes.TimeToLiveStatusEnabling, AttributeName: aws.String("expires_at")}}},
		{name: "another attribute is an error", fake: fakeExpiry{desc: &ddbtypes.TimeToLiveDescription{
			TimeToLiveStatus: ddbtypes.TimeToLiveStatusEnabled, AttributeName: aws.String("ttl")}},
			wantErr: `table spool expires items by "ttl", not "expires_at"`},
		{name: "unknown operation", fake: fakeExpiry{err: &smithy.GenericAPIError{Code: "UnknownOperationException"}},
			wantErr: "describe time to live of table spool", unsupported: true},
		{name: "other errors pass", fake: fakeExpiry{err: &smithy.GenericAPIError{Code: "AccessDeniedException"}},
			wantErr: "AccessDeniedException"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.fake
			err := provision.EnsureExpiry(context.Background(), &f, "spool")
			require.Equal(t, tt.wantUpdates, f.updates)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
			if tt.unsupported {
				require.ErrorIs(t, err, provision.ErrExpiryUnsupported)
			} else {
				require.NotErrorIs(t, err, provision.ErrExpiryUnsupported)
			}
		})
	}
}

// TestEnsureExpiryOnTheEmulator runs against the DynamoDB emulator of the
// run (dynalite, which describes time to live but cannot turn it on, or
// DynamoDB Local, which can): time to live ends up on, for
// tablelayout.ExpiresAt, or the answer says plainly that the endpoint
// cannot, so callers can warn and go on. Either way a second call answers
// the same.
func TestEnsureExpiryOnTheEmulator(t *testing.T) {
	ctx := context.Background()
	db := emutest.Table(t, "spool")
	first := provision.EnsureExpiry(ctx, db, "spool")
	again := provision.EnsureExpiry(ctx, db, "spool")
	if errors.Is(first, provision.ErrExpiryUnsupported) {
		t.Log("this endpoint cannot turn on time to live")
		require.ErrorContains(t, first, "turn on time to live of table spool")
		require.ErrorIs(t, again, provision.ErrExpiryUnsupported)
		return
	}
	require.NoError(t, first)
	require.NoError(t, again)
	requireExpiryOn(t, db, "spool")
}

// requireExpiryOn checks that table's time to live is on (or turning on)
// for tablelayout.ExpiresAt.
func requireExpiryOn(t *testing.T, db *dynamodb.Client, table string) {
	t.Helper()
	out, err := db.DescribeTimeToLive(context.Background(), &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(table)})
	require.NoError(t, err)
	d := out.TimeToLiveDescription
	require.NotNil(t, d)
	require.Contains(t, []ddbtypes.TimeToLiveStatus{ddbtypes.TimeToLiveStatusEnabled, ddbtypes.TimeToLiveStatusEnabling}, d.TimeToLiveStatus)
	require.Equal(t, tablelayout.ExpiresAt, aws.ToString(d.AttributeName))
}
