package main

import (
	"testing"

	"github.com/berth-project/berth/internal/manpage"
)

func TestManPage(t *testing.T) {
	fs, _ := flags()
	if err := manpage.CheckOptions("berthd.8.md", fs); err != nil {
		t.Error(err)
	}
}
