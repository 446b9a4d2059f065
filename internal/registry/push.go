package registry

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Pushed is what Push uploaded.
type Pushed struct {
	Ref    string // docker://REGISTRY/REPO@sha256:…
	Digest string
	Name   string // REGISTRY/REPO:TAG as pushed, what a signature names
	Sent   int64  // bytes sent, headers aside: blobs the registry had are not sent
}

// Push uploads img as rawRef (docker://REGISTRY/REPO:TAG, the scheme may
// be left out). Blobs the registry has already, in this repository or
// another it can mount from, are not sent again.
func (p *Client) Push(ctx context.Context, rawRef string, img v1.Image, progress func(done, total int64)) (*Pushed, error) {
	if !strings.HasPrefix(rawRef, Scheme) {
		rawRef = Scheme + rawRef
	}
	ref, err := ParseRef(rawRef)
	if err != nil {
		return nil, err
	}
	var sent atomic.Int64
	ref, opts, err := p.options(ctx, rawRef, ref, func(rt http.RoundTripper) http.RoundTripper {
		return countSent{rt, &sent}
	})
	if err != nil {
		return nil, err
	}
	// Write closes updates when it returns; progress is not called after
	// Push returns (the caller's reply is final then).
	updates := make(chan v1.Update, 16)
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		for u := range updates {
			progress(u.Complete, u.Total)
		}
	}()
	err = remote.Write(ref, img, append(opts, remote.WithProgress(updates))...)
	<-reported
	if err != nil {
		return nil, p.fail(rawRef, err)
	}
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	return &Pushed{Ref: Scheme + ref.Context().Name() + "@" + d.String(), Digest: d.String(), Name: ref.Name(), Sent: sent.Load()}, nil
}

// countSent counts the bytes of request bodies.
type countSent struct {
	rt http.RoundTripper
	n  *atomic.Int64
}

func (c countSent) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body = &countingBody{r.Body, c.n}
	}
	return c.rt.RoundTrip(r)
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
