package grpcserve

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Defaults of Limits.
const (
	// DefaultMaxConcurrentStreams bounds the calls one connection may have
	// open at once. A client that needs more opens more connections, which
	// the load balancer spreads over tasks.
	DefaultMaxConcurrentStreams = 100
	// DefaultKeepaliveMinTime is the shortest ping interval a client may
	// use; one that pings faster is sent GOAWAY ("too_many_pings").
	DefaultKeepaliveMinTime = 30 * time.Second
	// DefaultMaxConnectionAge makes long-lived clients reconnect now and
	// then, so that they spread over the tasks a scale-out added.
	DefaultMaxConnectionAge = 30 * time.Minute
	// DefaultMaxConnectionAgeGrace is what calls open when a connection
	// reaches its age get to finish; new calls already go to a new
	// connection. Most files stream in less; a bigger one cut off here
	// ends Unavailable, and spool send resumes it from its checkpoint, as
	// after any broken stream. A watch cut off here is watched again.
	DefaultMaxConnectionAgeGrace = time.Hour
	// DefaultKeepaliveTime and DefaultKeepaliveTimeout: the server pings
	// a connection idle this long, and closes it when the ping is not
	// answered in time, so connections to vanished clients do not pile
	// up behind a load balancer.
	DefaultKeepaliveTime    = 2 * time.Minute
	DefaultKeepaliveTimeout = 20 * time.Second
)

// Limits bound what one client connection may cost a server. Each is a
// flag (and so an environment variable, through envcfg) of both services.
type Limits struct {
	// MaxConcurrentStreams is the most calls open at once on one
	// connection (-grpc-max-concurrent-streams).
	MaxConcurrentStreams int
	// KeepaliveMinTime is the shortest interval between a client's pings
	// (-grpc-keepalive-min-time); PermitWithoutStream allows pings on a
	// connection with no call open (-grpc-keepalive-permit-without-stream).
	KeepaliveMinTime    time.Duration
	PermitWithoutStream bool
	// KeepaliveTime and KeepaliveTimeout: how long a connection may be
	// idle before the server pings it, and wait for the answer
	// (-grpc-keepalive-time, -grpc-keepalive-timeout).
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	// MaxConnectionAge is how long a connection lives before the server
	// asks its client to reconnect; MaxConnectionAgeGrace how long calls
	// then open get to finish (-grpc-max-connection-age,
	// -grpc-max-connection-age-grace). 0 means no limit.
	MaxConnectionAge      time.Duration
	MaxConnectionAgeGrace time.Duration
}

// DefaultLimits returns the limits a server runs with when no flag is
// given.
func DefaultLimits() Limits {
	return Limits{
		MaxConcurrentStreams:  DefaultMaxConcurrentStreams,
		KeepaliveMinTime:      DefaultKeepaliveMinTime,
		KeepaliveTime:         DefaultKeepaliveTime,
		KeepaliveTimeout:      DefaultKeepaliveTimeout,
		MaxConnectionAge:      DefaultMaxConnectionAge,
		MaxConnectionAgeGrace: DefaultMaxConnectionAgeGrace,
	}
}

// RegisterFlags adds the limits' flags to fs, with l's values as defaults.
func (l *Limits) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&l.MaxConcurrentStreams, "grpc-max-concurrent-streams", l.MaxConcurrentStreams, "most calls open at once on one client connection; more wait for one to end")
	fs.DurationVar(&l.KeepaliveMinTime, "grpc-keepalive-min-time", l.KeepaliveMinTime, "shortest interval between a client's keepalive pings; a client pinging faster is disconnected (too_many_pings)")
	fs.BoolVar(&l.PermitWithoutStream, "grpc-keepalive-permit-without-stream", l.PermitWithoutStream, "accept keepalive pings on a connection with no call open")
	fs.DurationVar(&l.KeepaliveTime, "grpc-keepalive-time", l.KeepaliveTime, "idle time of a connection after which the server pings it")
	fs.DurationVar(&l.KeepaliveTimeout, "grpc-keepalive-timeout", l.KeepaliveTimeout, "how long the server waits for the answer to its ping before closing the connection")
	fs.DurationVar(&l.MaxConnectionAge, "grpc-max-connection-age", l.MaxConnectionAge, "age at which a connection is asked to reconnect, so long-lived clients spread over new tasks; 0 = never")
	fs.DurationVar(&l.MaxConnectionAgeGrace, "grpc-max-connection-age-grace", l.MaxConnectionAgeGrace, "time the calls open on a connection that reached its age get to finish before it is closed; 0 = no bound")
}

// Validate reports every unusable limit at once, by flag name.
func (l Limits) Validate() error {
	var errs []error
	if l.MaxConcurrentStreams <= 0 || int64(l.MaxConcurrentStreams) > math.MaxUint32 {
		errs = append(errs, fmt.Errorf("-grpc-max-concurrent-streams %d: want 1 to %d", l.MaxConcurrentStreams, uint32(math.MaxUint32)))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"grpc-keepalive-min-time", l.KeepaliveMinTime},
		{"grpc-keepalive-time", l.KeepaliveTime},
		{"grpc-keepalive-timeout", l.KeepaliveTimeout},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("-%s must be positive", d.name))
		}
	}
	if l.MaxConnectionAge < 0 || l.MaxConnectionAgeGrace < 0 {
		errs = append(errs, errors.New("-grpc-max-connection-age and -grpc-max-connection-age-grace must not be negative"))
	}
	return errors.Join(errs...)
}

// ServerOptions returns the gRPC options that enforce l. A zero
// connection age or grace means infinity to grpc-go as to Spool.
func (l Limits) ServerOptions() []grpc.ServerOption {
	params := keepalive.ServerParameters{Time: l.KeepaliveTime, Timeout: l.KeepaliveTimeout}
	if l.MaxConnectionAge > 0 {
		params.MaxConnectionAge = l.MaxConnectionAge
	}
	if l.MaxConnectionAgeGrace > 0 {
		params.MaxConnectionAgeGrace = l.MaxConnectionAgeGrace
	}
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(uint32(l.MaxConcurrentStreams)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: l.KeepaliveMinTime, PermitWithoutStream: l.PermitWithoutStream}),
		grpc.KeepaliveParams(params),
	}
}
