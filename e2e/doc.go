// Package e2e holds Spool's end-to-end tests: they start the real
// emulators and the real service processes on free loopback ports, drive
// them the way users do (the spool CLI, grpcurl, gRPC clients), and stop
// everything they started.
package e2e
