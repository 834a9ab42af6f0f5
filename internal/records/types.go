// Package records defines igpt's record types and the framed shard format
// that every stage reads and writes, and the one reader (ScanFile) and
// writer (CreateShard, ShardFile) of shard files, local or gs://.
//
// A shard is a sequence of frames: a uint32 little-endian payload length, a
// uint32 CRC-32C (Castagnoli) of the payload, then the payload, one
// msgpack-encoded value. The first frame is a Header naming the kind of the
// records that follow.
package records

// Kind names the type of the records in a shard.
type Kind string

// Record kinds.
const (
	KindImage    Kind = "Image"
	KindTokens   Kind = "Tokens"
	KindFeatures Kind = "Features"
)

// Format and Version identify the shard format in every header.
const (
	Format  = "igpt"
	Version = 1
)

// Header is the first frame of every shard.
type Header struct {
	Format  string `msgpack:"format"`
	Version int    `msgpack:"version"`
	Kind    Kind   `msgpack:"kind"`
}

// Image is one decoded image: h×w×c uint8 pixels in HWC order.
type Image struct {
	Key   string `msgpack:"key"`
	Label int    `msgpack:"label"` // -1 when the image has no label
	H     int    `msgpack:"h"`
	W     int    `msgpack:"w"`
	C     int    `msgpack:"c"`
	Pix   []byte `msgpack:"pix"` // len H*W*C, HWC
}

// Tokens is one image as a sequence of vocabulary indices in raster order.
type Tokens struct {
	Key   string   `msgpack:"key"`
	Label int      `msgpack:"label"`
	H     int      `msgpack:"h"`
	W     int      `msgpack:"w"`
	Vocab int      `msgpack:"vocab"`
	Tok   []uint16 `msgpack:"tok"` // len H*W
}

// Features is one image's feature vector at one layer of a model.
type Features struct {
	Key   string    `msgpack:"key"`
	Label int       `msgpack:"label"`
	Layer int       `msgpack:"layer"`
	Vec   []float32 `msgpack:"vec"`
}
