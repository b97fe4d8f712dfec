//go:build vm

package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/agentclient"
	"github.com/hearth-sandbox/hearth/internal/pagesrv"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/sandboxsnap"
	"github.com/hearth-sandbox/hearth/internal/service"
)

// startHolder starts, in the guest, a process that keeps a random secret
// only in its own memory (its argv) and writes it to /dev/shm/secret.now
// every 0.2 s, and returns the secret.
func startHolder(t *testing.T, c *agentclient.Client, id string) string {
	t.Helper()
	out := vmExec(t, c, id, `S=$(cat /proc/sys/kernel/random/uuid)
setsid sh -c "while :; do echo $S > /dev/shm/secret.now; sleep 0.2; done" </dev/null >/dev/null 2>&1 &
echo $S`)
	secret := strings.TrimSpace(out)
	if len(secret) != 36 {
		t.Fatalf("holder secret %q", out)
	}
	return secret
}

// holderSecret proves the holder still runs with its memory: it removes
// the file and reads what the process writes next.
func holderSecret(t *testing.T, c *agentclient.Client, id string) string {
	t.Helper()
	return strings.TrimSpace(vmExec(t, c, id, `rm -f /dev/shm/secret.now
for i in $(seq 50); do [ -s /dev/shm/secret.now ] && break; sleep 0.1; done
cat /dev/shm/secret.now`))
}

// qemuRAMMapping returns the RAM file QEMU process pid was started with
// and whether it maps it copy-on-write (share=off).
func qemuRAMMapping(t *testing.T, pid int) (string, bool) {
	t.Helper()
	cmdline, err := readProcCmdline(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, arg := range strings.Split(cmdline, "\x00") {
		if !strings.HasPrefix(arg, "memory-backend-file,") {
			continue
		}
		var path string
		for _, o := range strings.Split(arg, ",") {
			if p, ok := strings.CutPrefix(o, "mem-path="); ok {
				path = p
			}
		}
		return path, strings.Contains(arg, ",share=off")
	}
	t.Fatalf("QEMU %d has no memory-backend-file: %s", pid, cmdline)
	return "", false
}

// TestVMLazyPauseResumeThrice: a sandbox resumed lazily (its snapshot's
// RAM file mapped copy-on-write) is paused and resumed three times; a
// process's memory and the files written between rounds survive each,
// every pause after the first records a diff (a fraction of memory), and
// the first seconds after a resume leave a working set behind.
func TestVMLazyPauseResumeThrice(t *testing.T) {
	e := newVMEnv(t, "tiny")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := e.client
	const id = "vmlz1"
	if _, err := c.CreateSandbox(ctx, service.CreateSandboxRequest{
		SandboxID: id, TemplateID: "tiny", TemplateKind: sbx.KindBase,
		VCPUs: 1, MemoryMB: 256, DiskSizeMB: 2048, AccessToken: "tok-" + id,
	}); err != nil {
		t.Fatal(err)
	}
	secret := startHolder(t, c, id)
	vmExec(t, c, id, "echo file-0 > $HOME/f0")
	snapDir := filepath.Join(e.data, "sandboxes", id, "snapshot")
	var prev sandboxsnap.Info
	var pid int
	for round := 1; round <= 3; round++ {
		if err := c.PauseSandbox(ctx, id); err != nil {
			t.Fatalf("round %d: pause: %v", round, err)
		}
		in, err := sandboxsnap.Stat(snapDir)
		if err != nil {
			t.Fatal(err)
		}
		if round > 1 {
			grew := in.StoredBytes - prev.StoredBytes
			if in.Generations <= prev.Generations || grew <= 0 || grew > prev.StoredBytes/2 {
				t.Errorf("round %d: pause stored %d more bytes in %d generations (before: %d bytes, %d generations): want a diff of the changed pages",
					round, grew, in.Generations, prev.StoredBytes, prev.Generations)
			}
			t.Logf("round %d: diff of %d KiB on a %d KiB snapshot", round, grew>>10, prev.StoredBytes>>10)
		}
		prev = in
		if _, err := c.ResumeSandbox(ctx, service.ResumeSandboxRequest{SandboxID: id, AccessToken: "tok-" + id}); err != nil {
			t.Fatalf("round %d: resume: %v", round, err)
		}
		pid = vmmPID(t, e.data, id)
		ram, private := qemuRAMMapping(t, pid)
		if !private || filepath.Dir(ram) != snapDir || !strings.HasPrefix(filepath.Base(ram), "ram-") {
			t.Fatalf("round %d: QEMU maps %s (copy-on-write %v), want the snapshot's RAM file mapped copy-on-write", round, ram, private)
		}
		if got := holderSecret(t, c, id); got != secret {
			t.Fatalf("round %d: the holder process says %q, want %q", round, got, secret)
		}
		var want, files strings.Builder
		for i := 0; i < round; i++ {
			fmt.Fprintf(&want, "file-%d\n", i)
			fmt.Fprintf(&files, " $HOME/f%d", i)
		}
		if out := vmExec(t, c, id, "cat"+files.String()); out != want.String() {
			t.Fatalf("round %d: files %q, want %q", round, out, want.String())
		}
		vmExec(t, c, id, fmt.Sprintf("echo file-%d > $HOME/f%d", round, round))
		if round == 1 {
			ws := filepath.Join(snapDir, "workingset")
			deadline := time.Now().Add(30 * time.Second)
			for {
				pages, err := pagesrv.LoadWorkingSet(ws, 1<<20)
				if err == nil && len(pages) > 0 {
					t.Logf("working set after the first resume: %d pages", len(pages))
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no working set recorded after a resume: %v", err)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	if err := c.DestroySandbox(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := e.agent.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.pool.Close(); err != nil {
		t.Fatal(err)
	}
	assertNoLeaks(t, e.data, id, pid)
}

// smapsRollup returns the kB fields of /proc/PID/smaps_rollup.
func smapsRollup(pid int) map[string]int64 {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	out := map[string]int64{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 2 && f[1] == "kB" {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			out[k] = n
		}
	}
	return out
}

// TestVMTemplateChildrenShareAndDiverge: two children of one snapshot
// template map the template's one RAM file copy-on-write (one copy of its
// clean pages for both), read the template's memory (a process and its
// secret) and disk, then diverge: what one writes to memory or disk the
// other and the source never see, also across a pause and resume.
func TestVMTemplateChildrenShareAndDiverge(t *testing.T) {
	e := newVMEnv(t, "tiny")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := e.client
	const src, tpl = "vmtsrc", "lztpl"
	if _, err := c.CreateSandbox(ctx, service.CreateSandboxRequest{
		SandboxID: src, TemplateID: "tiny", TemplateKind: sbx.KindBase,
		VCPUs: 1, MemoryMB: 256, DiskSizeMB: 2048, AccessToken: "tok-" + src,
	}); err != nil {
		t.Fatal(err)
	}
	secret := startHolder(t, c, src)
	vmExec(t, c, src, "echo from-template > $HOME/tpl.txt; echo template > /dev/shm/who")
	if _, err := c.CreateSnapshot(ctx, src, tpl); err != nil {
		t.Fatal(err)
	}
	kids := []string{"vmtkid1", "vmtkid2"}
	var rams []string
	var inodes []uint64
	for _, k := range kids {
		if _, err := c.CreateSandbox(ctx, service.CreateSandboxRequest{
			SandboxID: k, TemplateID: tpl, TemplateKind: sbx.KindSnapshot,
			VCPUs: 1, MemoryMB: 256, AccessToken: "tok-" + k,
		}); err != nil {
			t.Fatal(err)
		}
		pid := vmmPID(t, e.data, k)
		ram, private := qemuRAMMapping(t, pid)
		if !private || !strings.HasPrefix(ram, filepath.Join(e.data, "templates", tpl)) {
			t.Fatalf("child %s maps %s (copy-on-write %v), want the template's RAM file copy-on-write", k, ram, private)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(ram, &st); err != nil {
			t.Fatal(err)
		}
		rams, inodes = append(rams, ram), append(inodes, st.Ino)
		if got := holderSecret(t, c, k); got != secret {
			t.Fatalf("child %s: holder says %q, want the template's %q", k, got, secret)
		}
		if out := vmExec(t, c, k, "cat $HOME/tpl.txt /dev/shm/who"); out != "from-template\ntemplate\n" {
			t.Fatalf("child %s reads %q from the template", k, out)
		}
	}
	if rams[0] != rams[1] || inodes[0] != inodes[1] {
		t.Fatalf("children map %s (inode %d) and %s (inode %d): want one file", rams[0], inodes[0], rams[1], inodes[1])
	}
	for _, k := range kids {
		sm := smapsRollup(vmmPID(t, e.data, k))
		t.Logf("child %s QEMU: Rss %d kB, Pss %d kB, Anonymous %d kB, Pss_File %d kB", k, sm["Rss"], sm["Pss"], sm["Anonymous"], sm["Pss_File"])
	}
	for _, k := range kids {
		vmExec(t, c, k, fmt.Sprintf("echo %s > /dev/shm/who; echo %s > $HOME/mine", k, k))
	}
	check := func(when string) {
		t.Helper()
		for _, k := range kids {
			if out := vmExec(t, c, k, "cat /dev/shm/who $HOME/mine"); out != k+"\n"+k+"\n" {
				t.Fatalf("%s: child %s reads %q, want its own writes", when, k, out)
			}
		}
		if out := vmExec(t, c, src, "cat /dev/shm/who; ls $HOME/mine 2>/dev/null || echo none"); out != "template\nnone\n" {
			t.Fatalf("%s: the source reads %q", when, out)
		}
	}
	check("after divergence")
	// A child pauses into its own directory (in full: its first pause) and
	// resumes from there, keeping its own memory.
	if err := c.PauseSandbox(ctx, kids[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ResumeSandbox(ctx, service.ResumeSandboxRequest{SandboxID: kids[0], AccessToken: "tok-" + kids[0]}); err != nil {
		t.Fatal(err)
	}
	if ram, _ := qemuRAMMapping(t, vmmPID(t, e.data, kids[0])); !strings.HasPrefix(ram, filepath.Join(e.data, "sandboxes", kids[0])) {
		t.Fatalf("resumed child maps %s, want its own snapshot's RAM file", ram)
	}
	if got := holderSecret(t, c, kids[0]); got != secret {
		t.Fatalf("resumed child: holder says %q", got)
	}
	check("after the child's pause and resume")
	for _, id := range append(kids, src) {
		if err := c.DestroySandbox(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.DeleteSnapshot(ctx, tpl); err != nil {
		t.Fatal(err)
	}
}

// TestVMKilledMidRestoreLeavesNothing kills the VMM while a resume (and
// then a spawn from a template) restores it: the operation fails, and
// after the destroy nothing of the sandbox remains, nor any half-written
// file in the template.
func TestVMKilledMidRestoreLeavesNothing(t *testing.T) {
	e := newVMEnv(t, "tiny")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := e.client
	const id, tpl, kid = "vmkr1", "killtpl", "vmkrkid"
	if _, err := c.CreateSandbox(ctx, service.CreateSandboxRequest{
		SandboxID: id, TemplateID: "tiny", TemplateKind: sbx.KindBase,
		VCPUs: 1, MemoryMB: 256, DiskSizeMB: 2048, AccessToken: "tok-" + id,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSnapshot(ctx, id, tpl); err != nil {
		t.Fatal(err)
	}
	// killDuring runs op and SIGKILLs the first new VMM of sandbox sb it
	// sees; it reports whether op failed and the killed pid.
	killDuring := func(sb string, old int, op func() error) (bool, int) {
		done := make(chan error, 1)
		go func() { done <- op() }()
		pidFile := filepath.Join(e.data, "sandboxes", sb, "vm", "vmm.pid")
		for {
			select {
			case err := <-done:
				return err != nil, 0
			default:
			}
			if p := readPIDFile(pidFile); p != 0 && p != old && syscall.Kill(p, 0) == nil {
				_ = syscall.Kill(p, syscall.SIGKILL)
				return <-done != nil, p
			}
			time.Sleep(time.Millisecond)
		}
	}
	var killed int
	for attempt := 0; ; attempt++ {
		old := vmmPID(t, e.data, id)
		if err := c.PauseSandbox(ctx, id); err != nil {
			t.Fatal(err)
		}
		failed, pid := killDuring(id, old, func() error {
			_, err := c.ResumeSandbox(ctx, service.ResumeSandboxRequest{SandboxID: id, AccessToken: "tok-" + id})
			return err
		})
		if failed {
			killed = pid
			break
		}
		if attempt == 3 {
			t.Fatal("the resume finished before its VMM could be killed, four times")
		}
		if _, err := c.ResumeSandbox(ctx, service.ResumeSandboxRequest{SandboxID: id, AccessToken: "tok-" + id}); err != nil && !strings.Contains(err.Error(), "running") {
			t.Logf("resume after a late kill: %v", err)
		}
	}
	t.Logf("killed VMM %d mid-resume", killed)
	failed, kidPID := killDuring(kid, 0, func() error {
		_, err := c.CreateSandbox(ctx, service.CreateSandboxRequest{
			SandboxID: kid, TemplateID: tpl, TemplateKind: sbx.KindSnapshot,
			VCPUs: 1, MemoryMB: 256, AccessToken: "tok-" + kid,
		})
		return err
	})
	t.Logf("spawn with its VMM killed: failed %v (pid %d)", failed, kidPID)
	for _, sb := range []string{id, kid} {
		if err := c.DestroySandbox(ctx, sb); err != nil && !strings.Contains(err.Error(), "not found") {
			t.Fatalf("destroy %s: %v", sb, err)
		}
	}
	ents, err := os.ReadDir(filepath.Join(e.data, "templates", tpl, "snapshot"))
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range ents {
		if strings.HasPrefix(en.Name(), ".") {
			t.Errorf("template snapshot holds a leftover %s", en.Name())
		}
	}
	if err := c.DeleteSnapshot(ctx, tpl); err != nil {
		t.Fatal(err)
	}
	if err := e.agent.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.pool.Close(); err != nil {
		t.Fatal(err)
	}
	assertNoLeaks(t, e.data, id, killed)
	assertNoLeaks(t, e.data, kid, max(kidPID, 1))
}
