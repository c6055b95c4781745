//! Exporter-style shape arithmetic (Shape, Gather, Range, Equal, Where, Expand,
//! ConstantOfShape, Concat, Unsqueeze, Cast, Sqrt/Div on constants) folds into
//! constants at import, leaving only the ops that touch data.
use mote_core::{Tensor, TensorType};
use mote_onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use prost::Message;

fn vi(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    let tt = type_proto::Tensor { elem_type: Some(DataType::Float as i32), shape: Some(TensorShapeProto { dim }) };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tt)), ..Default::default() }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(output.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn tensor(name: &str, dt: DataType, dims: &[i64], f: &[f32], i: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(dt as i32),
        dims: dims.to_vec(),
        float_data: f.to_vec(),
        int64_data: i.to_vec(),
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

#[test]
fn shape_arithmetic_folds_to_constants() {
    let one_f = tensor("", DataType::Float, &[1], &[1.0], &[]);
    let value_attr = AttributeProto {
        name: Some("value".into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(one_f),
        ..Default::default()
    };
    let nodes = vec![
        node("Shape", &["x"], "s", vec![]),                           // [1, 4]
        node("Gather", &["s", "i1"], "n", vec![int_attr("axis", 0)]), // 4
        node("Range", &["zero", "n", "step"], "r", vec![]),           // [0, 1, 2, 3]
        node("Equal", &["r", "two"], "eq", vec![]),                   // [F, F, T, F]
        node("Cast", &["n"], "nf", vec![int_attr("to", DataType::Float as i64)]),
        node("Sqrt", &["nf"], "sq", vec![]),                                 // 2.0
        node("Div", &["ten", "sq"], "five", vec![]),                         // 5.0
        node("Where", &["eq", "five", "onef"], "w", vec![]),                 // [1, 1, 5, 1]
        node("Unsqueeze", &["n", "ax0"], "n1", vec![]),                      // [4]
        node("Concat", &["i1v", "n1"], "shape2", vec![int_attr("axis", 0)]), // [1, 4]
        node("Expand", &["w", "shape2"], "we", vec![]),                      // [[1, 1, 5, 1]]
        node("ConstantOfShape", &["s"], "ones", vec![value_attr]),           // ones [1, 4]
        node("Mul", &["x", "we"], "xm", vec![]),
        node("Add", &["xm", "ones"], "y", vec![]),
    ];
    let init = vec![
        tensor("i1", DataType::Int64, &[], &[], &[1]),
        tensor("i1v", DataType::Int64, &[1], &[], &[1]),
        tensor("zero", DataType::Int64, &[], &[], &[0]),
        tensor("step", DataType::Int64, &[], &[], &[1]),
        tensor("two", DataType::Int64, &[], &[], &[2]),
        tensor("ax0", DataType::Int64, &[1], &[], &[0]),
        tensor("ten", DataType::Float, &[], &[10.0], &[]),
        tensor("onef", DataType::Float, &[], &[1.0], &[]),
    ];
    let bytes = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
        graph: Some(GraphProto {
            node: nodes,
            initializer: init,
            input: vec![vi("x", &[1, 4])],
            output: vec![vi("y", &[1, 4])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec();
    let g = mote_onnx::import(&bytes, &Default::default()).unwrap();
    let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.name()).collect();
    assert_eq!(ops, ["Mul", "Add"], "everything else folds");
    let x = Tensor::from_vec(&[1, 4], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
    let y = g.run(vec![x]).unwrap();
    assert_eq!(y[0], Tensor::from_vec(&[1, 4], vec![2.0f32, 3.0, 16.0, 5.0]).unwrap());
    assert_eq!(g.values[g.outputs[0]].ty, TensorType::new(mote_core::DType::F32, [1, 4]));
}
