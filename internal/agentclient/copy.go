package agentclient

import (
	"context"
	"errors"
	"fmt"
	"io"

	pb "github.com/hearth-sandbox/hearth/gen/hostagent/v1"
	"github.com/hearth-sandbox/hearth/internal/service"

	"connectrpc.com/connect"
)

var _ service.TemplateCopier = (*Client)(nil)

// CopyTemplateTo pipes this host's ExportTemplate of templateID into dst's
// ImportTemplate, chunk by chunk (nothing is buffered here); dst checks the
// exporter's hash before the template appears there. It returns the data
// bytes dst wrote.
func (c *Client) CopyTemplateTo(ctx context.Context, templateID string, dst service.HostClient) (int64, error) {
	to, ok := dst.(*Client)
	if !ok {
		return 0, fmt.Errorf("copy template %s: the target host is not an agent client (%T)", templateID, dst)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	src, err := c.rpc.ExportTemplate(ctx, connect.NewRequest(&pb.ExportTemplateRequest{TemplateId: templateID}))
	if err != nil {
		return 0, serviceErr("export template", err)
	}
	defer src.Close()
	sink := to.rpc.ImportTemplate(ctx)
	var sendErr error
	for sendErr == nil && src.Receive() {
		sendErr = sink.Send(src.Msg())
	}
	if err := src.Err(); err != nil {
		cancel() // the target must not see a clean end of a broken export
		sink.CloseAndReceive()
		return 0, serviceErr("export template", err)
	}
	// A Send error (io.EOF) means the target answered early: its error
	// comes from CloseAndReceive.
	res, err := sink.CloseAndReceive()
	if err != nil {
		return 0, serviceErr("import template", err)
	}
	if sendErr != nil && !errors.Is(sendErr, io.EOF) {
		return 0, serviceErr("import template", sendErr)
	}
	return res.Msg.Bytes, nil
}
