package image

import (
	"os"
	"path"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/codeinterp"
	"github.com/hearth-sandbox/hearth/internal/guestinit"
)

// codeInterpreterPackages are what the code-interpreter image adds to
// base, all from Debian (debootstrap resolves their dependencies): the
// Jupyter kernel and client the server drives, and the libraries model-
// written analysis code expects.
var codeInterpreterPackages = []string{
	"python3-ipykernel", "python3-jupyter-client", "python3-numpy", "python3-pandas", "python3-matplotlib",
}

// CodeInterpreterIncludes is the debootstrap include list of the
// code-interpreter image.
func CodeInterpreterIncludes() []string {
	return append(append([]string{}, BaseIncludes...), codeInterpreterPackages...)
}

// codeInterpreterService is the guest init's service file: an executable
// the init starts after envd and restarts when it exits.
var codeInterpreterService = "#!/bin/sh\n# Started (and restarted) by hearth-init; see internal/codeinterp.\nexec /usr/bin/python3 " +
	codeinterp.ServerPath + "\n"

// codeInterpreterSum is the part of the image's inputs hash that is not
// packages: the server and its service file.
func codeInterpreterSum() string {
	return sha(append(append([]byte{}, codeinterp.Script...), codeInterpreterService...))
}

// installCodeInterpreter writes the server and its service file into a
// root tree (through os.Root, as installGuest does).
func installCodeInterpreter(tree string) error {
	r, err := os.OpenRoot(tree)
	if err != nil {
		return err
	}
	defer r.Close()
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{codeinterp.ServerPath, codeinterp.Script, 0o755},
		{path.Join(guestinit.ServicesDir, codeinterp.ServiceName), []byte(codeInterpreterService), 0o755},
	}
	for _, f := range files {
		rel := strings.TrimPrefix(f.path, "/")
		if err := r.MkdirAll(path.Dir(rel), 0o755); err != nil {
			return err
		}
		if err := r.WriteFile(rel, f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}
