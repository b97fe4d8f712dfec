package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Request and response bodies of the Firecracker API we use. Hand-written
// from Firecracker's swagger definition (firecracker.yaml, Apache-2.0,
// github.com/firecracker-microvm/firecracker, src/firecracker/swagger);
// field names and enums follow that spec.

// MachineConfiguration is PUT /machine-config.
type MachineConfiguration struct {
	VCPUCount       int    `json:"vcpu_count"`
	MemSizeMib      int    `json:"mem_size_mib"`
	SMT             *bool  `json:"smt,omitempty"`
	TrackDirtyPages *bool  `json:"track_dirty_pages,omitempty"`
	HugePages       string `json:"huge_pages,omitempty"` // None | Transparent | 2M
}

// BootSource is PUT /boot-source.
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	BootArgs        string `json:"boot_args,omitempty"`
	InitrdPath      string `json:"initrd_path,omitempty"`
}

// Drive is PUT /drives/{drive_id}.
type Drive struct {
	DriveID      string `json:"drive_id"`
	IsRootDevice bool   `json:"is_root_device"`
	IsReadOnly   *bool  `json:"is_read_only,omitempty"`
	PathOnHost   string `json:"path_on_host,omitempty"`
	CacheType    string `json:"cache_type,omitempty"` // Unsafe | Writeback
	IOEngine     string `json:"io_engine,omitempty"`  // Sync | Async
}

// NetworkInterface is PUT /network-interfaces/{iface_id}.
type NetworkInterface struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
	GuestMAC    string `json:"guest_mac,omitempty"`
}

// Logger is PUT /logger.
type Logger struct {
	LogPath       string `json:"log_path,omitempty"`
	Level         string `json:"level,omitempty"` // Error | Warning | Info | Debug | Trace | Off
	ShowLevel     *bool  `json:"show_level,omitempty"`
	ShowLogOrigin *bool  `json:"show_log_origin,omitempty"`
}

// Metrics is PUT /metrics.
type Metrics struct {
	MetricsPath string `json:"metrics_path"`
}

// EntropyDevice is PUT /entropy.
type EntropyDevice struct{}

// InstanceActionInfo is PUT /actions.
type InstanceActionInfo struct {
	ActionType string `json:"action_type"` // FlushMetrics | InstanceStart | SendCtrlAltDel
}

// VM is PATCH /vm.
type VM struct {
	State string `json:"state"` // Paused | Resumed
}

// SnapshotCreateParams is PUT /snapshot/create.
type SnapshotCreateParams struct {
	SnapshotPath string `json:"snapshot_path"`
	MemFilePath  string `json:"mem_file_path"`
	SnapshotType string `json:"snapshot_type,omitempty"` // Full | Diff
}

// MemoryBackend is the mem_backend of a snapshot load.
type MemoryBackend struct {
	BackendType string `json:"backend_type"` // File | Uffd
	BackendPath string `json:"backend_path"`
}

// NetworkOverride changes an interface's tap on snapshot load.
type NetworkOverride struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
}

// SnapshotLoadParams is PUT /snapshot/load.
type SnapshotLoadParams struct {
	SnapshotPath     string            `json:"snapshot_path"`
	MemBackend       *MemoryBackend    `json:"mem_backend,omitempty"`
	TrackDirtyPages  bool              `json:"track_dirty_pages,omitempty"`
	ResumeVM         bool              `json:"resume_vm,omitempty"`
	NetworkOverrides []NetworkOverride `json:"network_overrides,omitempty"`
}

// InstanceInfo is GET /.
type InstanceInfo struct {
	AppName    string `json:"app_name"`
	ID         string `json:"id"`
	State      string `json:"state"` // "Not started" | Running | Paused
	VMMVersion string `json:"vmm_version"`
}

// APIError is a non-2xx answer (the spec's Error definition).
type APIError struct {
	Method, Path string
	Status       int
	FaultMessage string `json:"fault_message"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("firecracker %s %s: %d: %s", e.Method, e.Path, e.Status, e.FaultMessage)
}

// Client talks to one Firecracker API socket.
type Client struct {
	http *http.Client
}

// NewClient returns a client for the API socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns:    1,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{http: &http.Client{Transport: tr}}
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("firecracker %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, rd)
	if err != nil {
		return fmt.Errorf("firecracker %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("firecracker %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		e := &APIError{Method: method, Path: path, Status: resp.StatusCode}
		_ = json.Unmarshal(data, e)
		if e.FaultMessage == "" {
			e.FaultMessage = string(bytes.TrimSpace(data))
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("firecracker %s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// PutMachineConfig sets vCPUs and memory (pre-boot).
func (c *Client) PutMachineConfig(ctx context.Context, v MachineConfiguration) error {
	return c.do(ctx, http.MethodPut, "/machine-config", v, nil)
}

// PutBootSource sets the kernel (pre-boot).
func (c *Client) PutBootSource(ctx context.Context, v BootSource) error {
	return c.do(ctx, http.MethodPut, "/boot-source", v, nil)
}

// PutDrive adds a block device (pre-boot).
func (c *Client) PutDrive(ctx context.Context, v Drive) error {
	return c.do(ctx, http.MethodPut, "/drives/"+v.DriveID, v, nil)
}

// PutNetworkInterface adds a NIC on a tap (pre-boot).
func (c *Client) PutNetworkInterface(ctx context.Context, v NetworkInterface) error {
	return c.do(ctx, http.MethodPut, "/network-interfaces/"+v.IfaceID, v, nil)
}

// PutLogger configures Firecracker's own log.
func (c *Client) PutLogger(ctx context.Context, v Logger) error {
	return c.do(ctx, http.MethodPut, "/logger", v, nil)
}

// PutMetrics configures the metrics file.
func (c *Client) PutMetrics(ctx context.Context, v Metrics) error {
	return c.do(ctx, http.MethodPut, "/metrics", v, nil)
}

// PutEntropy adds a virtio-rng device (pre-boot).
func (c *Client) PutEntropy(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "/entropy", EntropyDevice{}, nil)
}

// InstanceStart boots the configured guest.
func (c *Client) InstanceStart(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "/actions", InstanceActionInfo{ActionType: "InstanceStart"}, nil)
}

// PatchVM pauses ("Paused") or resumes ("Resumed") the guest.
func (c *Client) PatchVM(ctx context.Context, state string) error {
	return c.do(ctx, http.MethodPatch, "/vm", VM{State: state}, nil)
}

// CreateSnapshot writes state and memory of a paused VM.
func (c *Client) CreateSnapshot(ctx context.Context, v SnapshotCreateParams) error {
	return c.do(ctx, http.MethodPut, "/snapshot/create", v, nil)
}

// LoadSnapshot restores a snapshot into a fresh process.
func (c *Client) LoadSnapshot(ctx context.Context, v SnapshotLoadParams) error {
	return c.do(ctx, http.MethodPut, "/snapshot/load", v, nil)
}

// DescribeInstance is GET /.
func (c *Client) DescribeInstance(ctx context.Context) (InstanceInfo, error) {
	var info InstanceInfo
	err := c.do(ctx, http.MethodGet, "/", nil, &info)
	return info, err
}
