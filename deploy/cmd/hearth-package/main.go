// Command hearth-package builds hearth's distribution artefacts from a
// built binary, without Docker or dpkg-buildpackage:
//
//	hearth-package deb   --binary bin/hearth --version 0.1.0 --out dist/
//	hearth-package image --binary bin/hearth-static --version 0.1.0 --out dist/hearth-image.tar
//
// deb: the package described by deploy/nfpm.yaml (binary, systemd units,
// default settings), made with nfpm as a library. image: a control-plane
// container image (docker-archive tarball, loadable by podman and docker)
// of one layer on an empty base, made with go-containerregistry.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hearth-sandbox/hearth/deploy/pkg/deb"
	"github.com/hearth-sandbox/hearth/deploy/pkg/image"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "hearth-package:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: hearth-package deb|image --binary FILE --version V --out PATH")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	binary := fs.String("binary", "", "hearth binary to package (static for the image: CGO_ENABLED=0)")
	version := fs.String("version", "0.0.0", "package version")
	out := fs.String("out", "", "deb: output directory; image: output tarball")
	tag := fs.String("tag", "", "image: name:tag (default hearth:<version>)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *binary == "" || *out == "" {
		return errors.New("--binary and --out are required")
	}
	switch args[0] {
	case "deb":
		// nfpm.yaml's paths are relative to the deploy directory.
		here, err := deployDir()
		if err != nil {
			return err
		}
		path, err := deb.Build(deb.Options{Dir: here, Binary: *binary, Version: *version, OutDir: *out})
		if err != nil {
			return err
		}
		fmt.Println(path)
	case "image":
		if *tag == "" {
			*tag = "hearth:" + *version
		}
		if err := image.Write(image.Options{Binary: *binary, Tag: *tag, Out: *out}); err != nil {
			return err
		}
		fmt.Println(*out)
	default:
		return fmt.Errorf("unknown artefact %q: deb or image", args[0])
	}
	return nil
}

// deployDir is the directory of nfpm.yaml: the working directory when it
// has one (go run from deploy/), else deploy/ under it (the repository root).
func deployDir() (string, error) {
	for _, d := range []string{".", "deploy"} {
		if _, err := os.Stat(filepath.Join(d, "nfpm.yaml")); err == nil {
			return filepath.Abs(d)
		}
	}
	return "", errors.New("nfpm.yaml not found: run from the repository root or deploy/")
}
