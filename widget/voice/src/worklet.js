// The capture AudioWorklet. Shipped as a Blob module so the widget stays one file.
import { Downsampler } from './resample.js';

export const PROCESSOR_NAME = 'voiceapp-capture';

/** Source text of the worklet module (the Downsampler class plus a tiny processor). */
export function workletSource() {
  return `const Downsampler = ${Downsampler.toString()};
class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions || {};
    this.down = new Downsampler(sampleRate, o.targetRate || 16000, o.frameSamples || 320);
  }
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      for (const frame of this.down.push(channel)) this.port.postMessage(frame.buffer, [frame.buffer]);
    }
    return true;
  }
}
registerProcessor(${JSON.stringify(PROCESSOR_NAME)}, CaptureProcessor);
`;
}

/** Register the processor on `context` (once per context). */
export async function addCaptureModule(context) {
  const url = URL.createObjectURL(new Blob([workletSource()], { type: 'text/javascript' }));
  try {
    await context.audioWorklet.addModule(url);
  } finally {
    URL.revokeObjectURL(url);
  }
}
