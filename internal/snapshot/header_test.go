package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
)

func sampleHeader() *Header {
	h := &Header{
		BlockSize: 4096,
		MemSize:   4 * 4096,
		Seq:       5,
		Gens:      []GenInfo{{ID: 2, Blocks: 2}, {ID: 5, Blocks: 1}},
		Entries:   []Entry{{Gen: 0, Slot: 1}, {Gen: ZeroGen}, {Gen: 1, Slot: 0}, {Gen: 0, Slot: 0}},
	}
	h.Hashes = []uint64{1, zeroHash(4096), 3, 4}
	return h
}

func TestHeaderRoundTrip(t *testing.T) {
	t.Parallel()
	h := sampleHeader()
	b, err := h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if want := 64 + 16*2 + 16*4 + 4; len(b) != want {
		t.Fatalf("encoded %d bytes, want %d", len(b), want)
	}
	got, err := ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := got.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, b2) {
		t.Fatal("re-encoding differs")
	}
}

// refresh recomputes both checksums so that a test reaches the semantic
// checks behind them.
func refresh(b []byte) []byte {
	le := binary.LittleEndian
	le.PutUint32(b[60:], crc32.Checksum(b[:60], castagnoli))
	if len(b) >= 68 {
		le.PutUint32(b[len(b)-4:], crc32.Checksum(b[64:len(b)-4], castagnoli))
	}
	return b
}

func TestParseHeaderRejects(t *testing.T) {
	t.Parallel()
	good, err := sampleHeader().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	cases := []struct {
		name   string
		mutate func(b []byte) []byte
	}{
		{"empty", func([]byte) []byte { return nil }},
		{"magic", func(b []byte) []byte { b[0] = 'X'; return refresh(b) }},
		{"preamble crc", func(b []byte) []byte { b[16]++; return b }},
		{"body crc", func(b []byte) []byte { b[70]++; return b }},
		{"version", func(b []byte) []byte { le.PutUint32(b[8:], 2); return refresh(b) }},
		{"flags", func(b []byte) []byte { le.PutUint32(b[12:], 1); return refresh(b) }},
		{"block size not power of two", func(b []byte) []byte { le.PutUint32(b[16:], 5000); return refresh(b) }},
		{"huge block count", func(b []byte) []byte {
			le.PutUint64(b[24:], 1<<60)
			le.PutUint64(b[40:], 1<<48)
			return refresh(b)
		}},
		{"huge generation count", func(b []byte) []byte { le.PutUint32(b[20:], 1<<31); return refresh(b) }},
		{"truncated", func(b []byte) []byte { return refresh(b[:len(b)-8]) }},
		{"slot out of range", func(b []byte) []byte { le.PutUint32(b[64+32+4:], 9); return refresh(b) }},
		{"gen index out of range", func(b []byte) []byte { le.PutUint32(b[64+32:], 7); return refresh(b) }},
		{"gen ids not increasing", func(b []byte) []byte { le.PutUint64(b[64+16:], 1); return refresh(b) }},
		{"gen id beyond seq", func(b []byte) []byte { le.PutUint64(b[32:], 3); return refresh(b) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := tc.mutate(bytes.Clone(good))
			if _, err := ParseHeader(b); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ParseHeader = %v, want ErrCorrupt", err)
			}
		})
	}
}

// FuzzParseHeader: any input gives a header or an error, never a panic, and
// what parses re-encodes to the same bytes. Run with
// go test -fuzz=FuzzParseHeader ./internal/snapshot/
func FuzzParseHeader(f *testing.F) {
	good, err := sampleHeader().MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:64])
	f.Add([]byte("HRTHSNAP"))
	f.Add(refresh(append([]byte(nil), good...)))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseHeader(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		// Parsed structures are bounded by the input size.
		if len(h.Entries)*16+len(h.Gens)*16 > len(data) {
			t.Fatalf("parsed %d entries, %d gens from %d bytes", len(h.Entries), len(h.Gens), len(data))
		}
		b, err := h.MarshalBinary()
		if err != nil {
			t.Fatalf("valid header does not re-encode: %v", err)
		}
		if !bytes.Equal(b, data) {
			t.Fatal("re-encoding differs from the accepted input")
		}
	})
}
