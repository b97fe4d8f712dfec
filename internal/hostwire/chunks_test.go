package hostwire

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestSendChunks(t *testing.T) {
	t.Parallel()
	errSend, errRead := errors.New("send"), errors.New("read")
	data := bytes.Repeat([]byte("x"), 2*ChunkSize+5)
	for _, tc := range []struct {
		name     string
		r        io.Reader
		failSend bool
		sizes    []int
		want     error
	}{
		{"empty", bytes.NewReader(nil), false, nil, nil},
		{"chunks", bytes.NewReader(data), false, []int{ChunkSize, ChunkSize, 5}, nil},
		{"send fails", bytes.NewReader(data), true, []int{ChunkSize}, errSend},
		{"read fails", iotest.ErrReader(errRead), false, nil, errRead},
	} {
		var sizes []int
		err := SendChunks(tc.r, func(b []byte) error {
			sizes = append(sizes, len(b))
			if tc.failSend {
				return errSend
			}
			return nil
		})
		var re *ReadError
		if !errors.Is(err, tc.want) || (tc.want == errRead) != errors.As(err, &re) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
		if len(sizes) != len(tc.sizes) || (len(sizes) > 0 && sizes[len(sizes)-1] != tc.sizes[len(tc.sizes)-1]) {
			t.Errorf("%s: chunks %v, want %v", tc.name, sizes, tc.sizes)
		}
	}
}
