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
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/defaults"
	"github.com/containerd/containerd/errdefs"
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
	args := []string{"--root", root, "--address", sock, "--log-level", "info"}
	if cfg := os.Getenv("MODELPACK_SNAPSHOTTER_CONFIG"); cfg != "" {
		args = append(args, "--config", cfg)
	}
	cmd := exec.Command(bin, args...)
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
			_ = cmd.Process.Signal(syscall.SIGQUIT)
			time.Sleep(200 * time.Millisecond)
			_ = cmd.Process.Kill()
			<-exited
			log, _ := os.ReadFile(logf.Name())
			if len(log) > 4000 {
				log = log[len(log)-4000:]
			}
			return fmt.Errorf("modelpack-snapshotter did not stop on SIGTERM within 10s; its log ends:\n%s", log)
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
	if seed := os.Getenv("MODELPACK_LAZY_MODEL"); seed != "" {
		if err := seedLazyModel(sn, seed); err != nil {
			conn.Close()
			_ = stop()
			return nil, nil, fmt.Errorf("seeding a lazy model: %w", err)
		}
	}
	return sn, func() error {
		cerr := conn.Close()
		if err := stop(); err != nil {
			return err
		}
		return cerr
	}, nil
}

// lazyModel is what tests/e2e/snapshotter_conformance.rs passes in
// MODELPACK_LAZY_MODEL: the Prepares `pull --containerd` would send for a
// model with a bound chunk index, and one of its files to read back.
type lazyModel struct {
	Prepares []struct {
		Parent string            `json:"parent"`
		Labels map[string]string `json:"labels"`
	} `json:"prepares"`
	Top    string `json:"top"`
	File   string `json:"file"`
	Sha256 string `json:"sha256"`
}

// seedLazyModel commits the model's layers lazily and mounts a View of it
// in the snapshotter under test, reading one file through the FUSE view, so
// every case of the suite runs with lazy model snapshots present.
func seedLazyModel(sn snapshots.Snapshotter, seed string) error {
	var m lazyModel
	if err := json.Unmarshal([]byte(seed), &m); err != nil {
		return err
	}
	ctx := context.Background()
	for i, p := range m.Prepares {
		_, err := sn.Prepare(ctx, fmt.Sprintf("modelpack-seed-%d", i), p.Parent, snapshots.WithLabels(p.Labels))
		if !errdefs.IsAlreadyExists(err) {
			return fmt.Errorf("model layer %d: want AlreadyExists (committed remotely), got %v", i, err)
		}
	}
	info, err := sn.Stat(ctx, m.Top)
	if err != nil {
		return fmt.Errorf("stat of the model's top layer: %w", err)
	}
	if info.Labels["containerd.io/snapshot/modelpack.chunk-index"] == "" {
		return fmt.Errorf("the model's top layer was not committed lazily: %v", info.Labels)
	}
	mounts, err := sn.View(ctx, "modelpack-seed-view", m.Top)
	if err != nil {
		return fmt.Errorf("view of the model: %w", err)
	}
	if len(mounts) != 1 || mounts[0].Type != "bind" {
		return fmt.Errorf("a model view is one bind mount, got %+v", mounts)
	}
	data, err := os.ReadFile(filepath.Join(mounts[0].Source, m.File))
	if err != nil {
		return fmt.Errorf("reading %s through the lazy view: %w", m.File, err)
	}
	sum := sha256.Sum256(data)
	if !bytes.Equal([]byte(hex.EncodeToString(sum[:])), []byte(m.Sha256)) {
		return fmt.Errorf("%s read through the lazy view has sha256 %x, want %s", m.File, sum, m.Sha256)
	}
	return nil
}
