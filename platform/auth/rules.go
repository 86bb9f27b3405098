package auth

import (
	"errors"
	"fmt"

	"google.golang.org/grpc"
)

// Cover reports every method of desc that has no rule and every rule that
// names no method of desc. A method without a rule is refused to everyone
// and a rule without a method is a typo that guards nothing, so each service
// checks its rules against its descriptor in a test.
func (r Rules) Cover(desc *grpc.ServiceDesc) error {
	methods := map[string]bool{}
	for _, m := range desc.Methods {
		methods["/"+desc.ServiceName+"/"+m.MethodName] = true
	}
	for _, s := range desc.Streams {
		methods["/"+desc.ServiceName+"/"+s.StreamName] = true
	}
	var errs []error
	for m := range methods {
		if len(r[m]) == 0 {
			errs = append(errs, fmt.Errorf("no rule for %s", m))
		}
	}
	for m := range r {
		if !methods[m] {
			errs = append(errs, fmt.Errorf("a rule for %s, which %s does not have", m, desc.ServiceName))
		}
	}
	return errors.Join(errs...)
}
