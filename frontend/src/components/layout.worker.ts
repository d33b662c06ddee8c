// Lays out big graphs off the main thread (STYLE §11): the page stays responsive meanwhile.
import { layout, type LayoutIn } from "./layout";

self.onmessage = (e: MessageEvent<{ key: string; input: LayoutIn }>) => {
  (self as unknown as Worker).postMessage({ key: e.data.key, out: layout(e.data.input) });
};
