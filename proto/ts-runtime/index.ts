// Lattice TypeScript client: `import { LatticeClient, Opcode } from "./lattice";`
export * from "./messages";
export * from "./protocol";
export * from "./icons";
export * from "./frame";
export * from "./version";
export * from "./transport";
export * from "./client";
