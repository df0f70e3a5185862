package protowire

import (
	"fmt"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Fields describes the fields of the registered message name, in
// declaration order, as "name=number kind": kind is "repeated X",
// "map<K,V>", "message full.Name" or the scalar kind.
func Fields(name string) ([]string, error) {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return nil, err
	}
	m, ok := d.(protoreflect.MessageDescriptor)
	if !ok {
		return nil, fmt.Errorf("%s is not a message", name)
	}
	out := []string{}
	fields := m.Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		kind := f.Kind().String()
		switch {
		case f.IsMap():
			kind = fmt.Sprintf("map<%s,%s>", f.MapKey().Kind(), f.MapValue().Kind())
		case f.Message() != nil:
			kind = "message " + string(f.Message().FullName())
		}
		if f.IsList() {
			kind = "repeated " + kind
		}
		out = append(out, fmt.Sprintf("%s=%d %s", f.Name(), f.Number(), kind))
	}
	return out, nil
}

// RPCs describes the methods of the registered service name, in
// declaration order, as "Method(Input) stream=<server streams> Output".
func RPCs(name string) ([]string, error) {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return nil, err
	}
	s, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("%s is not a service", name)
	}
	var out []string
	methods := s.Methods()
	for i := range methods.Len() {
		m := methods.Get(i)
		stream := m.IsStreamingServer()
		if m.IsStreamingClient() {
			out = append(out, fmt.Sprintf("%s(stream %s) stream=%v %s", m.Name(), m.Input().Name(), stream, m.Output().Name()))
			continue
		}
		out = append(out, fmt.Sprintf("%s(%s) stream=%v %s", m.Name(), m.Input().Name(), stream, m.Output().Name()))
	}
	return out, nil
}
