// Package ioberthpool holds the io.berth.Pool interface and the Go
// bindings varlink/go generates from it.
package ioberthpool

//go:generate go run github.com/varlink/go/cmd/varlink-go-interface-generator io.berth.Pool.varlink
