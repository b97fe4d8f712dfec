package cli

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Progress is hand-written rather than a library: two small widgets, drawn
// on stderr with \r, only when stderr is a terminal (scripts and CI logs
// get no control characters).

var spinFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// Spinner shows "⠋ msg (1.2s)" while something runs.
type Spinner struct {
	w       io.Writer
	msg     string
	start   time.Time
	done    chan struct{}
	stopped chan struct{}
	once    sync.Once
}

// StartSpinner starts a spinner on w when animate is true; otherwise the
// returned spinner only reports the final line on Stop.
func StartSpinner(w io.Writer, msg string, animate bool) *Spinner {
	s := &Spinner{w: w, msg: msg, start: time.Now(), done: make(chan struct{}), stopped: make(chan struct{})}
	if !animate {
		close(s.stopped)
		return s
	}
	go func() {
		defer close(s.stopped)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			fmt.Fprintf(s.w, "\r\033[K%s %s (%.1fs)", spinFrames[i%len(spinFrames)], s.msg, time.Since(s.start).Seconds())
			select {
			case <-s.done:
				fmt.Fprint(s.w, "\r\033[K")
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends the spinner and, when final is not empty, prints it with the
// elapsed time: "final (1.9s)". Safe to call more than once.
func (s *Spinner) Stop(final string) time.Duration {
	el := time.Since(s.start)
	s.once.Do(func() {
		close(s.done)
		<-s.stopped
		if final != "" {
			fmt.Fprintf(s.w, "%s (%.1fs)\n", final, el.Seconds())
		}
	})
	return el
}

// Bar is a byte progress bar: "[=======>      ]  53%  5.3 MiB / 10.0 MiB  21.0 MiB/s".
// It counts bytes through Reader/Writer wrappers. total < 0 means unknown
// (the bar shows bytes and speed only).
type Bar struct {
	w       io.Writer
	label   string
	total   int64
	animate bool
	start   time.Time

	mu    sync.Mutex
	n     int64
	drawn time.Time
}

// NewBar returns a bar drawing on w when animate is true.
func NewBar(w io.Writer, label string, total int64, animate bool) *Bar {
	return &Bar{w: w, label: label, total: total, animate: animate, start: time.Now()}
}

// Add counts n more bytes and redraws at most every 100 ms.
func (b *Bar) Add(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n += int64(n)
	if b.animate && time.Since(b.drawn) >= 100*time.Millisecond {
		b.drawn = time.Now()
		fmt.Fprint(b.w, "\r\033[K"+b.render(time.Since(b.start)))
	}
}

// N is the bytes counted so far.
func (b *Bar) N() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// Finish draws the final state and ends the line.
func (b *Bar) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.animate {
		fmt.Fprint(b.w, "\r\033[K"+b.render(time.Since(b.start))+"\n")
	}
}

// render is the bar's text for the current count after elapsed.
func (b *Bar) render(elapsed time.Duration) string {
	const width = 30
	rate := ""
	if s := elapsed.Seconds(); s > 0 {
		rate = "  " + Bytes(int64(float64(b.n)/s)) + "/s"
	}
	if b.total <= 0 {
		return fmt.Sprintf("%s  %s%s", b.label, Bytes(b.n), rate)
	}
	frac := min(float64(b.n)/float64(b.total), 1)
	fill := int(frac * width)
	bar := strings.Repeat("=", fill)
	if fill < width {
		bar += ">" + strings.Repeat(" ", width-fill-1)
	}
	return fmt.Sprintf("%s [%s] %3d%%  %s / %s%s", b.label, bar, int(frac*100), Bytes(b.n), Bytes(b.total), rate)
}

// Reader wraps r so reads advance the bar.
func (b *Bar) Reader(r io.Reader) io.Reader { return &barReader{r: r, b: b} }

// Writer wraps w so writes advance the bar.
func (b *Bar) Writer(w io.Writer) io.Writer { return &barWriter{w: w, b: b} }

type barReader struct {
	r io.Reader
	b *Bar
}

func (r *barReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.b.Add(n)
	return n, err
}

type barWriter struct {
	w io.Writer
	b *Bar
}

func (w *barWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.b.Add(n)
	return n, err
}
