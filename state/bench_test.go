package state

import (
	"fmt"
	"testing"
)

func cacheVolumes(n int) []NodeVolume {
	vs := make([]NodeVolume, n)
	for i := range vs {
		vs[i] = NodeVolume{
			Name: fmt.Sprintf("vol-%04d", i), Type: "nbd", Server: "storage-1:7000",
			Export: fmt.Sprintf("vol-%04d", i), Created: t0,
			Options: map[string]string{"size": "10G", "fs": "ext4"},
			Status:  map[string]string{"size": "10737418240", "attached": "node-3"}, StatusAt: t0,
		}
	}
	return vs
}

func BenchmarkNodeListVolumes1000(b *testing.B) {
	n := openNode(b)
	must(b, n.PutVolumes(cacheVolumes(1000)))
	b.ReportAllocs()
	for b.Loop() {
		vs, err := n.ListVolumes()
		if err != nil || len(vs) != 1000 {
			b.Fatal(len(vs), err)
		}
	}
}

func BenchmarkNodePutVolumes1000(b *testing.B) {
	n := openNode(b)
	vs := cacheVolumes(1000)
	b.ReportAllocs()
	for b.Loop() {
		must(b, n.PutVolumes(vs))
	}
}
