package hostwire

import (
	"errors"
	"io"
)

// ReadError is a failure of the reader SendChunks streams from (as
// opposed to one of send).
type ReadError struct{ Err error }

func (e *ReadError) Error() string { return "read source: " + e.Err.Error() }
func (e *ReadError) Unwrap() error { return e.Err }

// SendChunks reads r in ChunkSize pieces and hands each to send, until r
// ends (nil) or either fails: a failure of r comes back as *ReadError,
// one of send as it is.
func SendChunks(r io.Reader, send func([]byte) error) error {
	buf := make([]byte, ChunkSize)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if serr := send(buf[:n]); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return &ReadError{Err: err}
		}
	}
}
