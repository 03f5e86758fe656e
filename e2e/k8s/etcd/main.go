// etcd 3.5 (the series Kubernetes 1.33 is tested with; Debian ships 3.4), built from the same
// module graph as the Kubernetes binaries so one `go build` makes all four.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
