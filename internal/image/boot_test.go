package image

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/codeinterp"
	"github.com/hearth-sandbox/hearth/internal/guestinit"
)

// The boot tests need built images: HEARTH_IMAGES_DIR is a hearth data
// dir populated by `hearth image build --data-dir DIR`, e.g.
//
//	HEARTH_IMAGES_DIR=/var/tmp/hearth-dev go test ./internal/image -run Boot -v
//	HEARTH_IMAGES_DIR=/var/tmp/hearth-dev go test ./internal/image -run '^$' -bench Boot -benchtime 5x

// bootDeadline guards against a hung guest; it is not a speed assertion.
const bootDeadline = 3 * time.Minute

func imagesForTest(tb testing.TB, name string) string {
	tb.Helper()
	dir := os.Getenv("HEARTH_IMAGES_DIR")
	if dir == "" {
		tb.Skip("HEARTH_IMAGES_DIR not set: build images with `hearth image build --data-dir DIR` and point it at DIR")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		tb.Skip("qemu-system-x86_64 not found: install qemu-system-x86 (scripts/deps.sh)")
	}
	for _, p := range []string{KernelPath(dir), InitrdPath(dir), RootfsPath(dir, name)} {
		if _, err := os.Stat(p); err != nil {
			tb.Skipf("image %s not built in %s (%v): run `hearth image build --data-dir %s`", name, dir, err, dir)
		}
	}
	return dir
}

// hostTSCkHz returns the host TSC frequency: guests given
// tsc_early_khz skip the calibration that occasionally hangs under TCG.
func hostTSCkHz() (int, error) {
	if out, err := exec.Command("dmesg").Output(); err == nil {
		re := regexp.MustCompile(`tsc: (?:Refined TSC clocksource calibration|Detected): ([0-9]+)\.([0-9]{3}) MHz`)
		var khz int
		for _, m := range re.FindAllSubmatch(out, -1) {
			mhz, _ := strconv.Atoi(string(m[1]))
			frac, _ := strconv.Atoi(string(m[2]))
			khz = mhz*1000 + frac // the refined value, when present, comes last
		}
		if khz > 0 {
			return khz, nil
		}
	}
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "cpu MHz"); ok {
			v = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
			mhz, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return int(mhz * 1000), nil
			}
		}
	}
	return 0, fmt.Errorf("no TSC frequency in dmesg or /proc/cpuinfo")
}

// bootToMarker boots image name under QEMU microvm/TCG without network
// and returns the time from process start until marker shows on the
// serial console, plus the console log.
func bootToMarker(ctx context.Context, dataDir, name, serial, marker string) (time.Duration, string, error) {
	khz, err := hostTSCkHz()
	if err != nil {
		return 0, "", err
	}
	args := []string{
		"-M", "microvm", "-accel", "tcg", "-m", "512", "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-monitor", "none",
		"-serial", "file:" + serial, "-no-reboot",
		"-kernel", KernelPath(dataDir), "-initrd", InitrdPath(dataDir),
		"-append", fmt.Sprintf("console=ttyS0 tsc_early_khz=%d tsc=reliable panic=-1 reboot=t quiet", khz),
		// snapshot=on: the guest's writes go to a throw-away overlay, so
		// the built image stays pristine.
		"-drive", "id=root,file=" + RootfsPath(dataDir, name) + ",format=raw,if=none,snapshot=on",
		"-device", "virtio-blk-device,drive=root",
	}
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, "", err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		log, _ := os.ReadFile(serial)
		if bytes.Contains(log, []byte(marker)) {
			return time.Since(start), string(log), nil
		}
		select {
		case <-ctx.Done():
			return 0, string(log), fmt.Errorf("no %q on the console: %w", marker, ctx.Err())
		case err := <-exited:
			exited <- err
			log, _ := os.ReadFile(serial)
			return 0, string(log), fmt.Errorf("qemu exited before the marker (%v): %s", err, stderr.String())
		case <-tick.C:
		}
	}
}

func TestBootToEnvd(t *testing.T) {
	for _, tc := range []struct{ name, marker string }{
		{Tiny, guestinit.EnvdStartedMarker},
		{Base, guestinit.EnvdStartedMarker},
		// The init starts the image's service and the server comes up.
		{CodeInterpreter, codeinterp.ListeningMarker},
	} {
		name := tc.name
		t.Run(name, func(t *testing.T) {
			dir := imagesForTest(t, name)
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
			defer cancel()
			serial := filepath.Join(t.TempDir(), "serial.log")
			d, log, err := bootToMarker(ctx, dir, name, serial, tc.marker)
			if err != nil {
				t.Fatalf("%v\nconsole:\n%s", err, log)
			}
			if strings.Contains(log, "hearth-init: fatal") {
				t.Fatalf("init reported a fatal error:\n%s", log)
			}
			t.Logf("%s: %q after %s", name, tc.marker, d.Round(time.Millisecond))
		})
	}
}

// BenchmarkBootToEnvd reports the median time from QEMU start to the envd
// marker (ms-p50) for each image.
func BenchmarkBootToEnvd(b *testing.B) {
	for _, name := range []string{Tiny, Base} {
		b.Run(name, func(b *testing.B) {
			dir := imagesForTest(b, name)
			var ds []time.Duration
			for i := 0; i < b.N; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
				d, log, err := bootToMarker(ctx, dir, name, filepath.Join(b.TempDir(), "serial.log"), guestinit.EnvdStartedMarker)
				cancel()
				if err != nil {
					b.Fatalf("%v\nconsole:\n%s", err, log)
				}
				ds = append(ds, d)
			}
			sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
			b.ReportMetric(float64(ds[len(ds)/2].Milliseconds()), "ms-p50")
			b.ReportMetric(float64(ds[0].Milliseconds()), "ms-min")
			b.ReportMetric(float64(ds[len(ds)-1].Milliseconds()), "ms-max")
		})
	}
}
