// Package gen holds only code generated from proto/ by `make generate`.
// Nothing here is edited by hand.
package gen
