// Package ioberthtemplate holds the io.berth.Template interface and the Go
// bindings varlink/go generates from it. Edit the .varlink file, then run
// go generate; CI fails when the committed bindings differ.
package ioberthtemplate

//go:generate go run github.com/varlink/go/cmd/varlink-go-interface-generator io.berth.Template.varlink
