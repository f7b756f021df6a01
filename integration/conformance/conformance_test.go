// Package conformance runs containerd 1.6's own snapshotter conformance suite
// (github.com/containerd/containerd/snapshots/testsuite) against
// modelpack-snapshotter over its gRPC socket, the way containerd's proxy
// plugin talks to it.
//
// Built offline in GOPATH mode from Debian's golang-github-containerd-containerd-dev
// (GO111MODULE=off, GOPATH=<tmp>:/usr/share/gocode); tests/e2e/snapshotter_conformance.rs
// does that and runs it. By hand:
//
//	MODELPACK_SNAPSHOTTER=target/debug/modelpack-snapshotter go test -v .
package conformance

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/defaults"
	"github.com/containerd/containerd/pkg/dialer"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

func TestModelpackSnapshotterConformance(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: the containerd snapshotter testsuite mounts overlay and bind mounts itself, which needs root")
	}
	bin := os.Getenv("MODELPACK_SNAPSHOTTER")
	if bin == "" {
		t.Fatal("MODELPACK_SNAPSHOTTER must name the modelpack-snapshotter binary")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("modelpack-snapshotter binary: %v", err)
	}
	testsuite.SnapshotterSuite(t, "modelpack", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		return startSnapshotter(bin, root)
	})
}

// startSnapshotter runs one modelpack-snapshotter with `root` as its state
// directory (each case of the suite gets a fresh one) and connects to it.
func startSnapshotter(bin, root string) (snapshots.Snapshotter, func() error, error) {
	// Beside root, inside the case's temp dir (which the suite removes).
	sock := filepath.Join(filepath.Dir(root), "grpc.sock")
	logf, err := os.Create(filepath.Join(filepath.Dir(root), "snapshotter.log"))
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(bin, "--root", root, "--address", sock, "--log-level", "warn")
	cmd.Stdout = logf
	cmd.Stderr = logf
	// No snapshotter outlives a test binary that dies (e.g. on -test.timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() error {
		defer logf.Close()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("modelpack-snapshotter did not stop on SIGTERM within 10s")
		}
		return nil
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-exited:
			logf.Close()
			log, _ := os.ReadFile(logf.Name())
			return nil, nil, fmt.Errorf("modelpack-snapshotter exited before serving (%v):\n%s", err, log)
		default:
		}
		if time.Now().After(deadline) {
			_ = stop()
			return nil, nil, fmt.Errorf("%s did not appear within 15s", sock)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The same dial options as containerd 1.6's proxy plugin client
	// (services/server/server.go, proxyClients.getClient).
	backoffConfig := backoff.DefaultConfig
	backoffConfig.MaxDelay = 3 * time.Second
	conn, err := grpc.Dial(dialer.DialAddress(sock),
		grpc.WithInsecure(),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoffConfig}),
		grpc.WithContextDialer(dialer.ContextDialer),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(defaults.DefaultMaxRecvMsgSize)),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(defaults.DefaultMaxSendMsgSize)),
	)
	if err != nil {
		_ = stop()
		return nil, nil, fmt.Errorf("failed to dial %q: %w", sock, err)
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "modelpack")
	return sn, func() error {
		cerr := conn.Close()
		if err := stop(); err != nil {
			return err
		}
		return cerr
	}, nil
}
