"""`dmvfn_jax.planning.hlo`: collectives, their sizes and how often a call runs them, on small HLO texts
written in the two dialects the project meets (XLA CPU annotates loop trip counts, TPU does not)."""

from dmvfn_jax.planning import hlo

TPU_STYLE = """HloModule jit_step, entry_computation_layout={(f32[8]{0})->f32[8]{0}}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %sum = f32[] add(%a, %b)
}

%cond (p: (s32[], f32[8])) -> pred[] {
  %constant.7 = s32[]{:T(128)} constant(28), metadata={op_name="jit(step)"}
  %p = (s32[], f32[8]) parameter(0)
  %i = s32[]{:T(128)} get-tuple-element(%p), index=0
  ROOT %lt = pred[]{:T(512)} compare(%i, %constant.7), direction=LT
}

%body (q: (s32[], f32[8])) -> (s32[], f32[8]) {
  %q = (s32[], f32[8]) parameter(0)
  %g = f32[8]{0:T(1024)} get-tuple-element(%q), index=1
  %psum.3 = f32[8]{0:T(1024)S(1)} all-reduce(%g), channel_id=1, replica_groups={{0,1,2,3}}, to_apply=%add
  %j = s32[] get-tuple-element(%q), index=0
  ROOT %t = (s32[], f32[8]) tuple(%j, %psum.3)
}

ENTRY %main (x: f32[8]) -> f32[8] {
  %x = f32[8]{0} parameter(0)
  %ag = bf16[2,8]{1,0} all-gather(%x), dimensions={0}, replica_groups={{0,1}}
  %zero = s32[] constant(0)
  %init = (s32[], f32[8]) tuple(%zero, %x)
  %w = (s32[], f32[8]) while(%init), condition=%cond, body=%body
  ROOT %out = f32[8]{0} get-tuple-element(%w), index=1
}
"""


def test_tpu_loops_run_their_collectives_once_per_trip():
    found = {c.name: c for c in hlo.collectives(TPU_STYLE)}
    assert set(found) == {"psum.3", "ag"}
    assert (found["psum.3"].kind, found["psum.3"].runs, found["psum.3"].result_bytes) == ("all-reduce", 28, 32)
    assert (found["ag"].kind, found["ag"].runs, found["ag"].result_bytes) == ("all-gather", 1, 32)
    s = hlo.summary(list(found.values()))
    assert s["all-reduce"] == {"ops": 1, "runs": 28, "bytes": 28 * 32}
    assert [c.name for c in hlo.forbidden(list(found.values()))] == ["ag"]


def test_cpu_trip_count_annotation_wins():
    text = TPU_STYLE.replace("condition=%cond, body=%body",
                             'condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"5"}}')
    runs = {c.name: c.runs for c in hlo.collectives(text)}
    assert runs == {"psum.3": 5, "ag": 1}


def test_shape_bytes():
    assert hlo.shape_bytes("f32[3559944]{0:T(1024)S(1)}") == 4 * 3559944
    assert hlo.shape_bytes("(f32[2,3]{1,0}, bf16[4]{0}, s32[])") == 24 + 8 + 4
    assert hlo.shape_bytes("pred[16,9]{0,1:T(8,128)(4,1)}") == 144


# -- buffers, their tiles and where they come from --------------------------------------------

def test_arrays_round_the_two_minor_dimensions_of_the_layout_up_to_the_tile():
    # channels minor: 3 of 128 lanes
    [(text, written, tiled, space)] = hlo.arrays("f32[2,64,64,3]{3,2,1,0:T(8,128)}")
    assert (written, tiled, space) == (2 * 64 * 64 * 3 * 4, 2 * 64 * 64 * 128 * 4, 0)
    # the same array with width minor (the layout's order, not the shape's, says which is minor)
    [(_, written, tiled, _)] = hlo.arrays("f32[2,64,64,3]{2,1,3,0:T(8,128)}")
    assert (written, tiled) == (2 * 64 * 64 * 3 * 4, 2 * 3 * 64 * 128 * 4)
    # second-minor rounded to 8, bfloat16's (2,1) packing adds nothing, S(1) is on-chip memory
    [(_, written, tiled, space)] = hlo.arrays("bf16[5,130]{1,0:T(8,128)(2,1)S(1)}")
    assert (written, tiled, space) == (5 * 130 * 2, 8 * 256 * 2, 1)
    assert [a[1:] for a in hlo.arrays("(f32[1000]{0:T(1024)}, s32[]{:T(128)}, pred[4]{0})")] == [
        (4000, 4096, 0), (4, 4, 0), (4, 4, 0)]
    assert hlo.arrays("f32[7,3]")[0][1:] == (84, 84, 0)  # no layout: as written


BUFFERS = """HloModule jit_step

%fused_computation (p0: f32[2,64,64,3]) -> f32[2,64,64,3] {
  %p0 = f32[2,64,64,3]{3,2,1,0:T(8,128)} parameter(0)
  ROOT %inner = f32[2,64,64,3]{3,2,1,0:T(8,128)} multiply(%p0, %p0), metadata={op_name="jit(step)/inner"}
}

%cond (p: (s32[], f32[2,64,64,3])) -> pred[] {
  %c = s32[]{:T(128)} constant(28)
  %p = (s32[], f32[2,64,64,3]) parameter(0)
  %i = s32[]{:T(128)} get-tuple-element(%p), index=0
  ROOT %lt = pred[]{:T(512)} compare(%i, %c), direction=LT
}

%body (q: (s32[], f32[2,64,64,3])) -> (s32[], f32[2,64,64,3]) {
  %q = (s32[], f32[2,64,64,3]) parameter(0)
  %x = f32[2,64,64,3]{3,2,1,0:T(8,128)} get-tuple-element(%q), index=1
  %warped = f32[2,64,64,3]{3,2,1,0:T(8,128)} fusion(%x), kind=kLoop, calls=%fused_computation, metadata={op_name="jit(step)/shard_map/transpose(jvp(block3))/warp/vmap(jit(_map_coordinates))/gather" stack_frame_id=3}, backend_config={"estimated_cycles":"100"}
  %scratch = f32[2,64,64,3]{2,1,3,0:T(8,128)S(1)} copy(%warped), metadata={op_name="jit(step)/shard_map/block3/copy"}
  %j = s32[] get-tuple-element(%q), index=0
  ROOT %t = (s32[], f32[2,64,64,3]) tuple(%j, %warped)
}

ENTRY %main (x: f32[2,64,64,3]) -> f32[2,64,64,3] {
  %x = f32[2,64,64,3]{3,2,1,0:T(8,128)} parameter(0)
  %zero = s32[] constant(0)
  %init = (s32[], f32[2,64,64,3]) tuple(%zero, %x)
  %w = (s32[], f32[2,64,64,3]) while(%init), condition=%cond, body=%body
  %out = f32[2,64,64,3]{3,2,1,0:T(8,128)} get-tuple-element(%w), index=1
  ROOT %flat = f32[2,64,64,3]{2,1,3,0:T(8,128)} copy(%out), metadata={op_name="jit(step)/jit(main)/loss/copy"}
}
"""


def test_buffers_are_the_outputs_outside_fusions_counted_per_run():
    found = {b.name: b for b in hlo.buffers(BUFFERS)}
    # the fusion's inner multiply, parameters, tuples, constants and the loop itself write nothing
    assert set(found) == {"warped", "scratch", "lt", "flat"}
    w = found["warped"]
    assert (w.runs, w.written_bytes, w.tiled_bytes, w.estimated_cycles) == (28, 98304, 2 * 64 * 64 * 128 * 4, 100)
    assert w.largest == "f32[2,64,64,3]{3,2,1,0:T(8,128)}"
    assert found["scratch"].written_bytes == 0 and found["scratch"].largest == ""  # on-chip, not HBM
    assert (found["flat"].runs, found["flat"].tiled_bytes) == (1, 2 * 3 * 64 * 128 * 4)
    rows = {r.source: r for r in hlo.by_source(list(found.values()))}
    grad_warp = rows["grad block3/warp/gather"]
    assert (grad_warp.written_bytes, grad_warp.tiled_bytes, grad_warp.estimated_cycles) == (
        28 * 98304, 28 * 2 * 64 * 64 * 128 * 4, 2800)
    assert grad_warp.ratio == 128 / 3
    assert list(rows)[0] == "grad block3/warp/gather"  # the most tiled bytes first
    written, tiled = hlo.padding_totals(list(found.values()))
    # + the loop condition's one-byte predicate, 28 times
    assert written == 29 * 98304 + 28 and tiled == 28 * 2 * 64 * 64 * 128 * 4 + 2 * 3 * 64 * 128 * 4 + 28


def test_source_drops_jax_wrappers_and_keeps_the_named_scopes():
    assert hlo.source("jit(body)/shard_map/jvp(advance)/warp/vmap(vmap(jit(_map_coordinates)))/gather") == \
        "advance/warp/gather"
    assert hlo.source("jit(body)/shard_map/transpose(jvp(block8))/add_any") == "grad block8/add_any"
    assert hlo.source("jit(body)/shard_map/optimizer/jit(_where)/select_n") == "optimizer/select_n"
    assert hlo.source("jit(body)/shard_map/while/body/closed_call/perceptual_loss/conv_general_dilated") == \
        "perceptual_loss/conv_general_dilated"  # a scan's body
    assert hlo.source("") == "(no op_name)"


def test_the_compilers_copies_take_the_name_of_what_they_move():
    text = """HloModule m

ENTRY %main (x: f32[4,128]) -> f32[4,128] {
  %x = f32[4,128]{1,0:T(8,128)} parameter(0)
  %made = f32[4,128]{1,0:T(8,128)} exponential(%x), metadata={op_name="jit(f)/block2/exp"}
  %cs = (f32[4,128]{1,0:T(8,128)S(1)}, f32[4,128]{1,0:T(8,128)}, u32[]{:S(2)}) copy-start(%made)
  %cd = f32[4,128]{1,0:T(8,128)} copy-done(%cs)
  %odd = f32[4,128]{1,0:T(8,128)} add(%cd, %x)
  ROOT %back = f32[4,128]{1,0:T(8,128)} copy(%odd)
}
"""
    names = {b.name: hlo.source(b.op_name) for b in hlo.buffers(text)}
    # copies follow their operand back to a named instruction (copy-start's tuple aliases its
    # buffers: not one of its own); an unnamed computation stays unnamed, and so do its copies
    assert names == {"made": "block2/exp", "cd": "block2/exp", "odd": "(no op_name)", "back": "(no op_name)"}
