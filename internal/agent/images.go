package agent

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/hearth-sandbox/hearth/internal/image"
)

// dirImages finds boot artefacts in the layout of internal/image.
type dirImages struct {
	dataDir string

	mu    sync.Mutex        // guards users
	users map[string]string // image name → default user (cache)
}

var (
	_ Images      = (*dirImages)(nil)
	_ ImageLister = (*dirImages)(nil)
)

func newDirImages(dataDir string) *dirImages {
	return &dirImages{dataDir: dataDir, users: map[string]string{}}
}

func (d *dirImages) KernelPath() string { return image.KernelPath(d.dataDir) }

func (d *dirImages) InitrdPath() string {
	p := image.InitrdPath(d.dataDir)
	if !exists(p) {
		return ""
	}
	return p
}

func (d *dirImages) RootfsPath(name string) string { return image.RootfsPath(d.dataDir, name) }

// BaseImages lists the root file systems of every image (ImageLister).
func (d *dirImages) BaseImages() []string {
	paths, _ := filepath.Glob(image.RootfsPath(d.dataDir, "*"))
	return paths
}

// DefaultUser reads /etc/passwd out of the (unmounted) image with debugfs:
// "user" when the image has that account, else "root". Cached per image;
// an image is replaced only by a rebuild, which also restarts nothing here,
// so the cache is keyed by name and modification time.
func (d *dirImages) DefaultUser(ctx context.Context, name string) string {
	p := d.RootfsPath(name)
	st, err := os.Stat(p)
	if err != nil {
		return "root"
	}
	key := name + "@" + st.ModTime().String()
	d.mu.Lock()
	u, ok := d.users[key]
	d.mu.Unlock()
	if ok {
		return u
	}
	u = "root"
	out, err := exec.CommandContext(ctx, "debugfs", "-R", "cat /etc/passwd", p).Output()
	if err == nil && passwdHas(out, "user") {
		u = "user"
	}
	d.mu.Lock()
	d.users[key] = u
	d.mu.Unlock()
	return u
}

// passwdHas reports whether the passwd file has an account named user,
// or with user as its numeric uid.
func passwdHas(passwd []byte, user string) bool {
	sc := bufio.NewScanner(bytes.NewReader(passwd))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) > 2 && (f[0] == user || f[2] == user) {
			return true
		}
	}
	return false
}
