// A cursor for the load generators' hand-written protobuf walkers (watchgen.ts, leasegen.ts):
// they read the few fields they measure straight from the bytes, without decoding messages.
export class PbCursor {
  pos = 0;

  varint(b: Buffer): number {
    let x = 0;
    let mul = 1;
    for (;;) {
      const c = b[this.pos++]!;
      x += (c & 0x7f) * mul;
      if (c < 0x80) return x;
      mul *= 128;
    }
  }

  skip(b: Buffer, wireType: number): void {
    switch (wireType) {
      case 0: this.varint(b); return;
      case 1: this.pos += 8; return;
      case 2: { const n = this.varint(b); this.pos += n; return; }
      case 5: this.pos += 4; return;
      default: throw new Error(`protobuf wire type ${wireType}`);
    }
  }
}
