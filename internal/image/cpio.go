package image

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/guestinit"
)

// cpioWriter writes the "newc" format the kernel unpacks into its initial
// rootfs (Documentation/driver-api/early-userspace/buffer-format.rst).
type cpioWriter struct {
	w    io.Writer
	ino  int
	n    int64
	errs error
}

const (
	cpioDir  = 0o040000
	cpioReg  = 0o100000
	cpioLink = 0o120000
	cpioChr  = 0o020000
)

func (c *cpioWriter) header(name string, mode, size int, devMajor, devMinor int) {
	if c.errs != nil {
		return
	}
	c.ino++
	nlink := 1
	if mode&0o170000 == cpioDir {
		nlink = 2
	}
	// mtime 0 keeps the archive reproducible (content-keyed builds).
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, devMajor, devMinor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
}

func (c *cpioWriter) write(b []byte) {
	if c.errs != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.errs = err
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpioWriter) Dir(name string, perm int) { c.header(name, cpioDir|perm, 0, 0, 0) }

func (c *cpioWriter) File(name string, perm int, data []byte) {
	c.header(name, cpioReg|perm, len(data), 0, 0)
	c.write(data)
	c.pad()
}

func (c *cpioWriter) Symlink(name, target string) {
	c.header(name, cpioLink|0o777, len(target), 0, 0)
	c.write([]byte(target))
	c.pad()
}

func (c *cpioWriter) CharDev(name string, perm, major, minor int) {
	c.header(name, cpioChr|perm, 0, major, minor)
}

// Close writes the trailer.
func (c *cpioWriter) Close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	return c.errs
}

// writeInitramfs builds the stage-1 initramfs: the init at /init, the
// marker that tells it it is stage 1, /dev/console (so the kernel can
// give init a console before devtmpfs is mounted) and the modules with
// their load order.
func writeInitramfs(path string, initBin []byte, modules []namedBlob) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	c := &cpioWriter{w: f}
	modDir := strings.TrimPrefix(guestinit.ModulesDir, "/")
	for _, d := range []string{"dev", "proc", "sys", "newroot", "lib", "lib/modules", modDir} {
		c.Dir(d, 0o755)
	}
	c.CharDev("dev/console", 0o600, 5, 1)
	c.File("init", 0o755, initBin)
	c.File(strings.TrimPrefix(guestinit.InitramfsMarker, "/"), 0o644, nil)
	var order []byte
	for _, m := range modules {
		c.File(modDir+"/"+m.name, 0o644, m.data)
		order = append(order, m.name+"\n"...)
	}
	c.File(modDir+"/"+guestinit.ModulesOrder, 0o644, order)
	if err := c.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type namedBlob struct {
	name string
	data []byte
}
