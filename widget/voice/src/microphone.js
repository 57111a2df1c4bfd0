// Microphone capture: getUserMedia -> AudioWorklet (downsampling off the main thread) -> 20 ms frames.
import { addCaptureModule, PROCESSOR_NAME } from './worklet.js';

/** Owns the page's AudioContext (shared with playback) and the capture graph. */
export class Microphone {
  constructor({ onFrame, targetRate = 16000, frameSamples = 320, constraints = {} }) {
    this.onFrame = onFrame;
    this.targetRate = targetRate;
    this.frameSamples = frameSamples;
    this.constraints = { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true,
      ...constraints };
    this.context = null;
    this.starting = null;
    this.stream = null;
  }

  /** The AudioContext, created on first use (call inside a user gesture so it may play sound). */
  audioContext() {
    if (!this.context) {
      const Context = globalThis.AudioContext || globalThis.webkitAudioContext;
      if (!Context) throw Object.assign(new Error('this browser has no Web Audio'), { code: 'no_web_audio' });
      this.context = new Context({ latencyHint: 'interactive' });
    }
    if (this.context.state === 'suspended') this.context.resume().catch(() => {});
    return this.context;
  }

  /** Start capturing (idempotent). */
  start() {
    if (!this.starting) {
      this.starting = this.open().catch((err) => {
        this.starting = null;
        throw err;
      });
    }
    return this.starting;
  }

  async open() {
    const context = this.audioContext(); // synchronously, while the gesture is still active
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw Object.assign(new Error('microphone access needs a secure (https) page'), { code: 'no_microphone' });
    }
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ audio: this.constraints });
    } catch (err) {
      const denied = err && (err.name === 'NotAllowedError' || err.name === 'SecurityError');
      throw Object.assign(new Error(denied ? 'microphone permission was denied' : `no microphone: ${err && err.message}`),
        { code: denied ? 'mic_denied' : 'no_microphone' });
    }
    await addCaptureModule(context);
    const source = context.createMediaStreamSource(this.stream);
    const node = new AudioWorkletNode(context, PROCESSOR_NAME, {
      numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1, channelCountMode: 'explicit',
      processorOptions: { targetRate: this.targetRate, frameSamples: this.frameSamples },
    });
    node.port.onmessage = (event) => this.onFrame(event.data);
    // A muted path to the destination keeps the graph pulled in every browser.
    const mute = context.createGain();
    mute.gain.value = 0;
    source.connect(node).connect(mute).connect(context.destination);
    this.nodes = [source, node, mute];
  }

  /** Release the microphone (the browser's recording indicator goes off). */
  stop() {
    for (const node of this.nodes || []) node.disconnect();
    this.nodes = [];
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    this.starting = null;
  }
}
