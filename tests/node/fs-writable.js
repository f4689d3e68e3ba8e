// preview2-shim 0.26.1 refuses every openAt that carries the `mutateDirectory` flag, and Rust's
// std sets it on every writable open, so without this every write fails (os error 58). The
// shim otherwise honours the preopen as its root; this only clears that one flag.
import { filesystem } from '@bytecodealliance/preview2-shim';

const { types, preopens, _setPreopens } = filesystem;
const openAt = types.Descriptor.prototype.openAt;
types.Descriptor.prototype.openAt = function (pathFlags, path, openFlags, descriptorFlags) {
  const flags = { ...descriptorFlags, mutateDirectory: false };
  return openAt.call(this, pathFlags, path, openFlags, flags);
};

export { types, preopens, _setPreopens };
