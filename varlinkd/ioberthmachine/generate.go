// Package ioberthmachine holds the io.berth.Machine interface and the Go
// bindings varlink/go generates from it.
package ioberthmachine

//go:generate go run github.com/varlink/go/cmd/varlink-go-interface-generator io.berth.Machine.varlink
