package image

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progress prints build steps with the time elapsed since the build began:
//
//	[  0.4s] ==> kernel
//	[  2.1s]     apt-get download linux-image-6.1.0-56-cloud-amd64=6.1.192-2
//	[  3.0s] ok  kernel (2.6s)
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func newProgress(w io.Writer) *progress {
	if w == nil {
		w = io.Discard
	}
	return &progress{w: w, start: time.Now()}
}

func (p *progress) line(prefix, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "[%6.1fs] %s%s\n", time.Since(p.start).Seconds(), prefix, msg)
}

func (p *progress) logf(format string, args ...any) { p.line("    ", fmt.Sprintf(format, args...)) }

// step announces a step and returns the function that closes it.
func (p *progress) step(name string) func(err error) {
	p.line("==> ", name)
	t0 := time.Now()
	return func(err error) {
		d := time.Since(t0).Round(100 * time.Millisecond)
		if err != nil {
			p.line("ERR ", fmt.Sprintf("%s (%s): %v", name, d, err))
			return
		}
		p.line("ok  ", fmt.Sprintf("%s (%s)", name, d))
	}
}

// bar renders a text progress bar: [#######.............]  35%.
func bar(done, total int) string {
	const width = 24
	if total <= 0 {
		return ""
	}
	done = min(done, total)
	n := done * width / total
	return fmt.Sprintf("[%s%s] %3d%%", strings.Repeat("#", n), strings.Repeat(".", width-n), done*100/total)
}

// debootstrapWatcher turns debootstrap's "I: Retrieving/Extracting/
// Unpacking/Configuring <pkg>" lines into progress: a count while
// downloading, then a bar per phase against the number of packages
// retrieved (debootstrap interleaves Retrieving/Validating per package and
// installs in two passes, so the bar is approximate but monotonic).
type debootstrapWatcher struct {
	p       *progress
	partial string
	counts  map[string]int
	printed map[string]int
}

func (d *debootstrapWatcher) Write(b []byte) (int, error) {
	text := d.partial + string(b)
	lines := strings.Split(text, "\n")
	d.partial = lines[len(lines)-1]
	for _, line := range lines[:len(lines)-1] {
		d.handle(strings.TrimSpace(line))
	}
	return len(b), nil
}

func (d *debootstrapWatcher) handle(line string) {
	if d.counts == nil {
		d.counts, d.printed = map[string]int{}, map[string]int{}
	}
	rest, ok := strings.CutPrefix(line, "I: ")
	if !ok {
		if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
			d.p.logf("debootstrap %s", line)
		}
		return
	}
	verb, _, _ := strings.Cut(rest, " ")
	switch verb {
	case "Retrieving", "Extracting", "Unpacking", "Configuring":
	default:
		if strings.HasPrefix(rest, "Base system installed") {
			d.p.logf("debootstrap: base system installed")
		}
		return
	}
	d.counts[verb]++
	n := d.counts[verb]
	if verb == "Retrieving" {
		if n%40 == 1 {
			d.p.logf("debootstrap: retrieving package %d...", n)
		}
		return
	}
	total := d.counts["Retrieving"]
	pct := min(n*100/max(total, 1), 100)
	if pct/25 > d.printed[verb]/25 || d.printed[verb] == 0 {
		d.printed[verb] = max(pct, 1)
		d.p.logf("debootstrap: %-11s %s", strings.ToLower(verb), bar(n, total))
	}
}
