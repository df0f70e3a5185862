package protowire

import (
	"slices"
	"testing"

	_ "google.golang.org/protobuf/types/known/structpb"
)

func TestFields(t *testing.T) {
	for _, tc := range []struct {
		name    string
		want    []string
		wantErr bool
	}{
		{name: "google.protobuf.Struct", want: []string{"fields=1 map<string,message>"}},
		{name: "google.protobuf.ListValue", want: []string{"values=1 repeated message google.protobuf.Value"}},
		{name: "google.protobuf.NullValue", wantErr: true}, // an enum
		{name: "no.such.Message", wantErr: true},
	} {
		got, err := Fields(tc.name)
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("Fields(%s) = %q, %v; want %q (error %v)", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
	if _, err := RPCs("google.protobuf.Struct"); err == nil {
		t.Error("RPCs of a message: no error")
	}
}
