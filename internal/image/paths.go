// Package image builds hearth's guest images from Debian's apt registry:
// the kernel (an uncompressed vmlinux for PVH/Firecracker boot, extracted
// from linux-image-cloud-amd64), an initramfs holding the guest init and
// the virtio/vsock modules, and ext4 root filesystems ("base": Debian
// minbase with python3; "tiny": busybox-static; "code-interpreter": base
// plus Jupyter, numpy, pandas, matplotlib and the code-interpreter server)
// with envd and the init.
//
// Layout under DataDir:
//
//	images/kernel/vmlinux           uncompressed kernel ELF
//	images/kernel/initramfs.cpio    uncompressed newc cpio: /init + modules
//	images/kernel/modules/          the modules packed into the initramfs
//	images/kernel/version           kernel release, e.g. 6.1.0-56-cloud-amd64
//	images/kernel/manifest.json
//	images/<name>/rootfs.ext4       root filesystem (grown later by rootfs.EnsureImageSizes)
//	images/<name>/manifest.json
//	cache/                          downloaded .debs and the debootstrap tree
//
// Builds are idempotent: each artefact's manifest records a hash of its
// inputs (package versions, init/envd binaries, builder version); a build
// whose inputs hash matches the manifest reuses the artefact.
package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/hearth-sandbox/hearth/internal/codeinterp"
)

// Image names.
const (
	Base = "base"
	Tiny = "tiny"
	// CodeInterpreter is base plus Debian's Jupyter kernel, numpy, pandas
	// and matplotlib and hearth's code-interpreter server (codeinterp).
	CodeInterpreter = codeinterp.ImageName
)

// KernelName is the directory of the kernel + initramfs artefact.
const KernelName = "kernel"

// Names lists the root filesystem images the builder knows.
var Names = []string{Base, Tiny, CodeInterpreter}

func imagesDir(dataDir string) string { return filepath.Join(dataDir, "images") }

// KernelPath is the uncompressed vmlinux.
func KernelPath(dataDir string) string {
	return filepath.Join(imagesDir(dataDir), KernelName, "vmlinux")
}

// InitrdPath is the initramfs every image boots with (it loads virtio_blk
// before mounting the root disk).
func InitrdPath(dataDir string) string {
	return filepath.Join(imagesDir(dataDir), KernelName, "initramfs.cpio")
}

// RootfsPath is the ext4 root filesystem of image name.
func RootfsPath(dataDir, name string) string {
	return filepath.Join(imagesDir(dataDir), name, "rootfs.ext4")
}

// ManifestPath is the manifest of an artefact (an image name or KernelName).
func ManifestPath(dataDir, name string) string {
	return filepath.Join(imagesDir(dataDir), name, "manifest.json")
}

// Manifest describes one built artefact.
type Manifest struct {
	Name          string            `json:"name"`
	KernelVersion string            `json:"kernel_version"`
	Files         map[string]int64  `json:"files"` // file name -> size in bytes (apparent)
	Packages      map[string]string `json:"packages,omitempty"`
	BuiltAt       time.Time         `json:"built_at"`
	BuildSeconds  float64           `json:"build_seconds"`
	InputsHash    string            `json:"inputs_hash"`
	// Extra per-artefact input hashes (the kernel artefact records its
	// initramfs separately so a new init does not re-extract the kernel).
	Parts map[string]string `json:"parts,omitempty"`
}

// ReadManifest reads the manifest of an artefact.
func ReadManifest(dataDir, name string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(ManifestPath(dataDir, name))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("manifest %s: %w", name, err)
	}
	return m, nil
}

func writeManifest(dataDir string, m Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(ManifestPath(dataDir, m.Name), append(b, '\n'), 0o644)
}

// Info is one built root filesystem image as List reports it.
type Info struct {
	Name       string
	RootfsPath string
	Manifest   Manifest
}

// List returns the root filesystem images present in dataDir (those with
// a manifest and a rootfs file), sorted by name.
func List(dataDir string) ([]Info, error) {
	entries, err := os.ReadDir(imagesDir(dataDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, e := range entries {
		if !e.IsDir() || e.Name() == KernelName {
			continue
		}
		m, err := ReadManifest(dataDir, e.Name())
		if err != nil {
			continue
		}
		p := RootfsPath(dataDir, e.Name())
		if _, err := os.Stat(p); err != nil {
			continue
		}
		out = append(out, Info{Name: e.Name(), RootfsPath: p, Manifest: m})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// writeFileAtomic writes via a temporary file and rename so readers never
// see a partial file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
