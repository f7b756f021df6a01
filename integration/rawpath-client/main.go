// Command rawpath-client dials a unix socket the way grpc-go of containerd
// 1.6's era (and kubelet's CSI client of that time) does when it is given a
// bare path as its target: the path itself becomes the HTTP/2 :authority.
// It calls one unary method with an empty message and prints the gRPC status
// code and message, so a test can tell a server that answers (any code)
// from one whose HTTP/2 layer resets the stream (PROTOCOL_ERROR).
//
// Built offline in GOPATH mode against Debian's grpc-go 1.33 sources
// (tests/e2e/csi_node.rs does it). By hand:
//
//	rawpath-client /run/modelpack/csi.sock /csi.v1.Identity/Probe
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"github.com/golang/protobuf/ptypes/empty"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: rawpath-client SOCKET /package.Service/Method")
		os.Exit(2)
	}
	sock, method := os.Args[1], os.Args[2]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, sock,
		grpc.WithInsecure(),
		grpc.WithBlock(),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", addr)
		}))
	if err != nil {
		fmt.Printf("DialError %v\n", err)
		os.Exit(1)
	}
	defer conn.Close()
	var out empty.Empty
	err = conn.Invoke(ctx, method, &empty.Empty{}, &out)
	st := status.Convert(err)
	fmt.Printf("%s %s\n", st.Code(), st.Message())
}
