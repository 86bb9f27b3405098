package provision

// PutLayout lets the tests send the layout item's put again, as a retry
// or a concurrent provisioning would.
var PutLayout = putLayout
