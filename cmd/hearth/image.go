package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/image"
)

// newImageCmd is `hearth image`: build and list guest images.
func newImageCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Build and list guest images (kernel, initramfs, tiny, base and code-interpreter root filesystems)",
	}
	cmd.AddCommand(newImageBuildCmd(), newImageListCmd())
	return cmd
}

func newImageBuildCmd() *cobra.Command {
	var (
		o    image.Options
		only []string
	)
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build the guest kernel, initramfs and root filesystems from Debian's apt registry",
		Long: `Build the guest kernel (vmlinux extracted from linux-image-cloud-amd64),
the initramfs (guest init + virtio/vsock modules) and the root filesystems
"tiny" (busybox-static), "base" (Debian minbase + python3) and
"code-interpreter" (base + Debian's Jupyter kernel, numpy, pandas,
matplotlib and the code-interpreter server) with envd and the guest init
installed. Idempotent: artefacts whose inputs did not change
are reused; --force rebuilds them. Needs root and the packages installed by
scripts/deps.sh.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Images = only
			o.Progress = cmd.OutOrStdout()
			if err := image.Build(cmd.Context(), o); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "kernel:    %s\ninitramfs: %s\n", image.KernelPath(o.DataDir), image.InitrdPath(o.DataDir))
			for _, n := range o.Images {
				fmt.Fprintf(cmd.OutOrStdout(), "%-10s %s\n", n+":", image.RootfsPath(o.DataDir, n))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.DataDir, "data-dir", config.DefaultDataDir(), "hearth data directory (images go to DATA_DIR/images)")
	f.StringSliceVar(&only, "only", nil, "build only these images (tiny, base, code-interpreter); default all")
	f.BoolVar(&o.Force, "force", false, "rebuild even if the inputs did not change")
	f.StringVar(&o.InitBinary, "init", "", "prebuilt static hearth-init binary (default: go build ./cmd/hearth-init)")
	f.StringVar(&o.EnvdBinary, "envd", "", "prebuilt static envd binary (default: go build ./cmd/envd)")
	f.StringVar(&o.SourceDir, "source", "", "hearth source tree to build the guest binaries from (default: the one containing the working directory)")
	f.StringVar(&o.Mirror, "mirror", "", "Debian mirror for debootstrap (default: the host's apt mirror)")
	f.StringVar(&o.Suite, "suite", "", "Debian suite for debootstrap (default: the host's)")
	return cmd
}

func newImageListCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List built images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			imgs, err := image.List(dataDir)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSIZE\tKERNEL\tBUILT\tPATH")
			for _, i := range imgs {
				fmt.Fprintf(tw, "%s\t%d MB\t%s\t%s\t%s\n", i.Name, i.Manifest.Files["rootfs.ext4"]>>20,
					i.Manifest.KernelVersion, i.Manifest.BuiltAt.Format("2006-01-02 15:04"), i.RootfsPath)
			}
			if len(imgs) == 0 {
				fmt.Fprintf(os.Stderr, "no images in %s: run `hearth image build --data-dir %s`\n", dataDir, dataDir)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", config.DefaultDataDir(), "hearth data directory")
	return cmd
}
