package testbed

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Hostile archives that no careful tool writes, built by hand where
// archive/tar refuses to write them; tests and benchmarks feed them to
// importers.

// WritePAXBomb writes a tar stream of n directories to w, each carrying a
// PAX record of size bytes: small once compressed, n×size in headers.
func WritePAXBomb(w io.Writer, n, size int) error {
	tw := tar.NewWriter(w)
	big := strings.Repeat("x", size-64)
	for i := range n {
		err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%06d/", i), Typeflag: tar.TypeDir, Mode: 0o755, Format: tar.FormatPAX,
			PAXRecords: map[string]string{"comment": big}})
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

// SparseBomb is a 3 KB tar stream (GNU sparse 1.0, as GNU tar --posix
// writes it) describing a file of size bytes that is all hole but its
// last 512.
func SparseBomb(size int64) []byte {
	var out bytes.Buffer
	out.Write(PAXHeader(map[string]string{
		"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
		"GNU.sparse.name": "huge", "GNU.sparse.realsize": fmt.Sprint(size),
	}))
	out.Write(RawHeader("GNUSparseFile.0/huge", '0', 1024))
	m := make([]byte, 512)
	copy(m, fmt.Sprintf("1\n%d\n512\n", size-512))
	out.Write(m)
	out.Write(bytes.Repeat([]byte("e"), 512))
	out.Write(make([]byte, 1024))
	return out.Bytes()
}

// RawHeader is a ustar header block, written by hand.
func RawHeader(name string, typ byte, size int64) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], fmt.Sprintf("%011o\x00", 1700000000))
	b[156] = typ
	copy(b[257:265], "ustar\x0000")
	copy(b[148:156], "        ")
	var sum int
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// PAXHeader is a PAX extended header block ('x') with records, padded.
func PAXHeader(records map[string]string) []byte {
	keys := make([]string, 0, len(records))
	for k := range records {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var body bytes.Buffer
	for _, k := range keys {
		rec := " " + k + "=" + records[k] + "\n"
		n := len(rec) + 1
		for len(fmt.Sprint(n))+len(rec) != n {
			n++
		}
		fmt.Fprintf(&body, "%d%s", n, rec)
	}
	out := RawHeader("PaxHeaders/x", 'x', int64(body.Len()))
	out = append(out, body.Bytes()...)
	return append(out, make([]byte, (512-body.Len()%512)%512)...)
}
